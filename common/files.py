"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every writer fills a temporary file beside the target, flushes it to disk and renames it over the
target (a rename within one folder is atomic on POSIX file systems). The arguments are always
(path, what to write).

Temporary files are named `.<target name>.<pid>-<8 letters or digits>.tmp`: hidden, unique per
process and call (two runs never share one, even on two machines with the same pid), and
recognisable by `TEMPORARY_NAME`, which tells the target and the process that wrote it, so that a
later start can find what an interrupted run left behind. pretrained_models/download.sh names its
partial downloads the same way.
"""
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO, Callable

TEMPORARY_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)-(?P<token>[0-9A-Za-z]{8})\.tmp$")


def temporary_path(path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def leftover_temporaries(folder) -> list[Path]:
    """The temporary files of this module's naming in `folder` (not below it)."""
    return sorted(p for p in Path(folder).iterdir() if TEMPORARY_NAME.match(p.name) and p.is_file())


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


def atomic_torch_save(path, obj) -> Path:
    import torch  # here, not on top: evaluator.py writes its files without loading torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_copy(source, path) -> Path:
    """`path` becomes a hard link to `source` where the file system allows one (no bytes copied),
    else a copy of it."""

    def make(tmp: Path):
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    return _replace(path, make)
