"""Output folders: what one holds, and whether a path can be one. A run writes only into a folder that is
new, empty, or its own (see training/run_folder.py); these say which."""
import os
from pathlib import Path

from common.files import LOCK_NAME, TEMPORARY_NAME

NAMES_SHOWN = 4


def check_is_folder(path, option: str = "--output_dir"):
    """ValueError naming `option` when `path` exists and is not a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file, not a folder")


def folder_contents(folder) -> list[str]:
    """The names in `folder` besides a lock file and partial files (what a run killed before its first
    write leaves is no content); none for a folder that does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(name for name in os.listdir(folder) if name != LOCK_NAME and not TEMPORARY_NAME.match(name))


def shown(names: list[str]) -> str:
    """The first few names, for a message."""
    return ", ".join(names[:NAMES_SHOWN]) + (", ..." if len(names) > NAMES_SHOWN else "")


def check_outside(folder, option: str, data, data_option: str):
    """ValueError naming both when the output folder `folder` (made yet or not) is the data folder `data`
    or inside it: what a run writes there would be read back as its data (a new class, its own sample
    grids as training images). Links are resolved, so no other spelling of the path gets in."""
    real_folder, real_data = Path(os.path.realpath(folder)), Path(os.path.realpath(data))
    if real_folder == real_data or real_data in real_folder.parents:
        raise ValueError(f"{option} {folder} is inside {data_option} {data}: what the run writes there would be "
                         f"read as data; choose a folder outside it")
