"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every writer fills a temporary file beside the target, flushes it to disk and renames it over the
target (a rename within one folder is atomic on POSIX file systems). The arguments are always
(path, what to write). `new_file_write` makes a file that must not exist yet: its finished
temporary is hard-linked to the target's name, which fails when anything is there by then, so two
runs writing one new file at once cannot both succeed (a check before the work and a rename after
it would let the second replace the first's file).

Temporary files are named `.<target name>.<pid>-<8 letters or digits>.tmp`: hidden, unique per
process and call (two runs never share one, even on two machines with the same pid), and
recognisable by `TEMPORARY_NAME`, which tells the target and the process that wrote it. This module
holds an flock on a temporary while it fills it. A temporary is its writer's until that writer is
gone: `remove_temporaries` removes only those that no process holds and whose pid is no live process
on this machine, so it is safe anywhere, and every write here first removes the dead ones beside its
target (what killed runs left: partial checkpoints, samples, results). Any other writer into the
project's folders names its partial files the same way with its own pid, and they are removed alike
once it is gone: pretrained_models/download.sh does (`.<file>.$$-<8 hex digits>.tmp`), and so must
whatever replaces it.

A run folder belongs to one run: `run_lock(folder)` holds it for one process while that process
writes there, and refuses a second one with one line.

A journal says which files a piece of work made, so that exactly those, and nothing a user put beside
them, can be removed later (digits_demo/stages.py reruns a stage so). Inside `journal(folder, path)`
every file this process writes under `folder`, through this module or announced by its writer with
`journal_file` (appended logs, images, TensorBoard's files), is appended to the journal file `path`
before it appears (TensorBoard's, whose names its library chooses, just after).
"""
import errno
import fcntl
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import BinaryIO, Callable

TEMPORARY_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)-(?P<token>[0-9A-Za-z]{8})\.tmp$")
# What file systems without hard links (FAT, some network and FUSE mounts) answer to os.link.
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


def temporary_path(path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def leftover_temporaries(folder) -> list[Path]:
    """The temporary files of this module's naming in `folder` (not below it)."""
    return sorted(p for p in Path(folder).iterdir() if TEMPORARY_NAME.match(p.name) and p.is_file())


def writer_alive(path) -> bool:
    """Whether the process writing the temporary `path` may still run: a process of its pid lives on
    this machine, or some process (a writer of this module, wherever it runs) holds an flock on it."""
    path = Path(path)
    try:
        os.kill(int(TEMPORARY_NAME.match(path.name)["pid"]), 0)
        return True
    except ProcessLookupError:
        pass
    except PermissionError:  # another user's live process
        return True
    except OverflowError:  # no pid of this machine
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return True  # finished meanwhile, or not ours to judge: left as it is
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def remove_temporaries(folder) -> list[Path]:
    """Removes the temporaries in `folder` whose writers are gone (an interrupted run's partial files)
    and returns them; a running writer's are kept."""
    dead = [path for path in leftover_temporaries(folder) if not writer_alive(path)]
    for path in dead:
        path.unlink(missing_ok=True)
    return dead


@contextmanager
def naming_file(path):
    """An OSError inside names `path` when it names no file: a write into an open file (a full disk,
    a file-size limit) fails with only "[Errno 28] No space left on device"."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:  # not the OSErrors of other kinds (URLError)
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise


def check_new_file(path, option: str):
    """Refuses at a run's start a results file that exists (ValueError naming `option`), so that the
    work is not done in vain. Only a courtesy: `new_file_write` refuses it again at the end, which is
    what keeps an earlier run's file."""
    if os.path.lexists(path):
        raise _exists(path, option)


def _exists(path, option: str) -> ValueError:
    return ValueError(f"{option} {path} exists; results are written to new files only")


def _open_temporary(tmp: Path):
    """The new temporary, open for writing and flocked while it is open."""
    f = open(tmp, "xb")  # "x": never through a file that is already there
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    return f


def _synced(tmp: Path) -> None:
    # Without the fsync a crash soon after the rename can leave an empty target on ext4/xfs.
    # The folder itself is not synced: after a crash the rename may be undone, which leaves the
    # old file, still whole.
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())


def _replace(tmp: Path, path: Path) -> None:
    _synced(tmp)
    os.replace(tmp, path)


def _link_new(option: str):
    """The commit of a new file: it appears under its name only if nothing is there."""

    def commit(tmp: Path, path: Path) -> None:
        _synced(tmp)
        try:
            os.link(tmp, path)
            return
        except FileExistsError:
            raise _exists(path, option) from None
        except OSError as e:
            if e.errno not in NO_HARD_LINKS:
                raise
        # No hard links: the name is claimed by an exclusive create, then replaced. A kill between the
        # two leaves an empty file there, never another run's file replaced.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            raise _exists(path, option) from None
        os.replace(tmp, path)

    return commit


# ---- which files a piece of work made -------------------------------------------------------------
class _Journal:
    def __init__(self, folder: Path, path: Path):
        self.folder, self.path = folder.absolute(), path
        self.names = set(journaled(path))

    def add(self, file: Path) -> None:
        try:
            name = str(file.absolute().relative_to(self.folder))
        except ValueError:  # not under the folder
            return
        if name not in self.names:
            with open(self.path, "a") as f:
                f.write(name + "\n")
            self.names.add(name)


_journals: ContextVar[tuple] = ContextVar("journals", default=())


@contextmanager
def journal(folder, path):
    """While the block runs, the files written under `folder` are listed (relative to it, one a line)
    in the journal file `path`, which is appended to (a resumed piece of work adds to its list)."""
    token = _journals.set((*_journals.get(), _Journal(Path(folder), Path(path))))
    try:
        yield
    finally:
        _journals.reset(token)


def journal_file(path) -> None:
    """Lists `path`, which its caller is about to write, in the journals open now (a writer that does
    not write through this module calls it first)."""
    for entry in _journals.get():
        entry.add(Path(path))


def journaled(path) -> list[str]:
    """The names a journal file lists, each once, in the order written; none when there is no file."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    return list(dict.fromkeys(line for line in lines if line))


def _write(path, make: Callable[[Path], None], commit: Callable[[Path, Path], None] = _replace) -> Path:
    """make(temporary path) creates the new file; commit(temporary, path) puts it at `path`. If either
    raises, the temporary is removed and `path` is left as it was. The temporaries that dead writers
    left beside `path` go first."""
    path = Path(path)
    if path.parent.is_dir():
        remove_temporaries(path.parent)
    tmp = temporary_path(path)
    try:
        with naming_file(path):
            make(tmp)
            journal_file(path)
            commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _filled_by(write: Callable[[BinaryIO], None]) -> Callable[[Path], None]:
    def make(tmp: Path):
        with _open_temporary(tmp) as f:
            write(f)

    return make


def atomic_write(path, write: Callable[[BinaryIO], None]) -> Path:
    """`write(f)` fills a new binary file (f.name is its temporary path), which then replaces `path`."""
    return _write(path, _filled_by(write))


def new_file_write(path, write: Callable[[BinaryIO], None], option: str) -> Path:
    """`write(f)` fills a new binary file, which then appears as `path`. When `path` exists by then
    (another run made it meanwhile), it is left as it is and `check_new_file`'s ValueError, naming
    `option`, is raised."""
    return _write(path, _filled_by(write), _link_new(option))


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def new_file_text(path, text: str, option: str) -> Path:
    return new_file_write(path, lambda f: f.write(text.encode()), option)


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
            with open(source, "rb") as src, _open_temporary(tmp) as f:
                shutil.copyfileobj(src, f)

    return _write(path, make)


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
