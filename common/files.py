"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every writer fills a temporary file beside the target, flushes it to disk and renames it over the
target (a rename within one folder is atomic on POSIX file systems). The arguments are always
(path, what to write).

Temporary files are named `.<target name>.<pid>-<8 letters or digits>.tmp`: hidden, unique per
process and call (two runs never share one, even on two machines with the same pid), and
recognisable by `TEMPORARY_NAME`, which tells the target and the process that wrote it, so that a
later start can find what an interrupted run left behind. pretrained_models/download.sh names its
partial downloads the same way.

A run folder belongs to one run: `run_lock(folder)` holds it for one process while that process
writes there, and refuses a second one with one line.
"""
import fcntl
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable

TEMPORARY_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)-(?P<token>[0-9A-Za-z]{8})\.tmp$")


def temporary_path(path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def leftover_temporaries(folder) -> list[Path]:
    """The temporary files of this module's naming in `folder` (not below it)."""
    return sorted(p for p in Path(folder).iterdir() if TEMPORARY_NAME.match(p.name) and p.is_file())


def remove_temporaries(folder) -> list[Path]:
    """Removes the leftover temporaries of `folder` (an interrupted run's partial files) and returns
    them. Only while holding the folder's `run_lock`: a running writer's temporary looks the same."""
    leftovers = leftover_temporaries(folder)
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


@contextmanager
def naming_file(path):
    """An OSError inside names `path` when it names no file: a write into an open file (a full disk,
    a file-size limit) fails with only "[Errno 28] No space left on device"."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise


def _commit(tmp: Path, path: Path) -> None:
    # Without the fsync a crash soon after the rename can leave an empty target on ext4/xfs.
    # The folder itself is not synced: after a crash the rename may be undone, which leaves the
    # old file, still whole.
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _replace(path, make: Callable[[Path], None]) -> Path:
    """make(temporary path) creates the new file; it then replaces `path`. If `make` raises, the
    temporary file is removed and `path` is left as it was."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with naming_file(path):
            make(tmp)
            _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write(path, write: Callable[[BinaryIO], None]) -> Path:
    """`write(f)` fills a new binary file (f.name is its temporary path), which then replaces `path`."""

    def make(tmp: Path):
        with open(tmp, "xb") as f:  # "x": never through a file that is already there
            write(f)

    return _replace(path, make)


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


class _WriteErrors:
    """A binary file that keeps the first OSError of its writes: torch.save swallows it and raises a
    RuntimeError about the file position instead, which names neither the file nor the cause."""

    def __init__(self, f: BinaryIO):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self.f, name)


def atomic_torch_save(path, obj) -> Path:
    import torch  # here, not on top: evaluator.py writes its files without loading torch

    def write(f: BinaryIO):
        checked = _WriteErrors(f)
        try:
            torch.save(obj, checked)
        except Exception:
            if checked.error is not None:
                raise checked.error from None
            raise

    return atomic_write(path, write)


def atomic_copy(source, path) -> Path:
    """`path` becomes a hard link to `source` where the file system allows one (no bytes copied),
    else a copy of it."""

    def make(tmp: Path):
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    return _replace(path, make)


# ---- one run per folder --------------------------------------------------------------------------
LOCK_NAME = ".run.lock"


class FolderInUse(OSError):
    """Another process holds the folder's run_lock."""


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f" (process {text})" if text.isdigit() else ""


@contextmanager
def run_lock(folder):
    """Holds `folder` (made if missing) for this process alone while the block runs, or raises
    FolderInUse at once (no waiting) when another process holds it.

    An exclusive flock on `folder/.run.lock`: the kernel releases it when the process ends, however
    it ends, so a killed run never leaves the folder locked. The file holds the holder's pid (for
    the message) and is removed on release. A process that opened the file just before its holder
    removed it would lock a file that is no longer there: it checks that the path still names the
    file it locked, and starts again when not."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderInUse(f"{folder} is in use by another run{holder}: wait for it to end or choose "
                              f"another folder") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        path.unlink(missing_ok=True)  # while still locked: the next process finds no stale file
        os.close(fd)
