"""Reading checkpoint files: the one `torch.load` of the project.

Files are unpickled with `weights_only=True`: tensors, numbers, strings, containers and, because
published checkpoints carry their argparse arguments, `argparse.Namespace`; nothing in a file is
imported or run. Every way a file can be unusable (missing, a folder, empty, cut short, another
format, a pickle that asks for code) is one `ValueError` or `OSError` line naming the file.
"""
import argparse
import pickle
import re
import zipfile
from pathlib import Path

import torch

# torch's weights-only unpickler names the global it refused as "GLOBAL <module>.<name>".
REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
PICKLE_PROTOCOL_2_PLUS = b"\x80"  # the legacy format starts with a pickle


class CheckpointError(ValueError):
    """A file that is not a checkpoint this project can read; the message names the file."""


def _format_problem(f) -> str | None:
    """What is wrong with the file's bytes before torch reads them, or None."""
    head = f.read(len(ZIP_MAGIC))
    whole_zip = head == ZIP_MAGIC and zipfile.is_zipfile(f)  # reads the archive's end
    f.seek(0)
    if not head:
        return "the file is empty (an interrupted copy or download?)"
    if head == ZIP_MAGIC and not whole_zip:
        return "cut short: its zip archive has no end (an interrupted copy or download?)"
    if head != ZIP_MAGIC and not head.startswith(PICKLE_PROTOCOL_2_PLUS):
        return "not a PyTorch checkpoint (neither torch.save's zip archive nor its older pickle format)"
    return None


def _load_problem(error: Exception) -> str:
    text = " ".join(str(error).split())
    refused = REFUSED_GLOBAL.search(text)
    if refused:
        # torch's own message advises loading with weights_only=False: that would run the file's code.
        return (f"refused: it asks to import {refused.group(1)}, which a checkpoint of weights never needs "
                f"(nothing a file names is imported or run)")
    if isinstance(error, EOFError):
        return "cut short (an interrupted copy or download?)"
    if isinstance(error, pickle.UnpicklingError):
        text = text.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].strip()
    return f"not a readable PyTorch checkpoint ({text or type(error).__name__})"


def load_checkpoint_file(path, map_location="cpu", what: str = "checkpoint", mmap: bool = False):
    """The object saved in the checkpoint file at `path` (weights only), on `map_location`.
    `what` names the kind of file in messages ("autoencoder checkpoint", ...); `mmap`: tensors stay
    in the file until used (to read a few values of a large checkpoint; torch's older format, which
    cannot be mapped, is read whole)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise IsADirectoryError(f"{what} {path} is a folder, not a file")
    with open(path, "rb") as f:  # no permission: an OSError naming the file
        problem = _format_problem(f)
        if problem is None:
            try:
                with torch.serialization.safe_globals([argparse.Namespace]):
                    mapped = mmap and f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
                    f.seek(0)
                    return torch.load(path if mapped else f, map_location=map_location, weights_only=True,
                                      mmap=mapped)
            except Exception as e:  # noqa: BLE001 - whatever fails while parsing the bytes, the file is bad
                problem = _load_problem(e)
    raise CheckpointError(f"{path}: {problem}")
