"""The published checkpoint format (docs/method.md section 9), in one place: the file names of a model
folder, reading checkpoint and config files, strict loading of state dicts, and the state-dict key
names (PUBLISHED_KEYS, where an attribute is named otherwise than its published key).

Building a generator from a model folder is models/checkpoint.py's job; saving and resuming a training
run, training/checkpoint.py's.

Checkpoint files are unpickled with `weights_only=True`: tensors, numbers, strings, containers and,
because published checkpoints carry their argparse arguments, `argparse.Namespace`; nothing in a file is
imported or run. Every way a file can be unusable (missing, a folder, empty, cut short, another
format, a pickle that asks for code) is one `ValueError` or `OSError` line naming the file.
"""
import argparse
import pickle
import re
import zipfile
from functools import partial
from pathlib import Path

import torch

from common.yaml_files import load_yaml

# A model folder, as the published code writes it (and the Hub holds it): the weights and the config.
LAST = "checkpoint-last.pth"  # the latest checkpoint; the one a folder is loaded and resumed from
CONFIG = "config.yaml"  # `model:` (the architecture) and `args:` (the training recipe)
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+|last)\.pth$")  # LAST or a kept epoch's


def epoch_checkpoint_name(epoch: int) -> str:
    """The file name of the checkpoint kept after `epoch` (counted from 0)."""
    return f"checkpoint-{epoch}.pth"


def read_config(path) -> tuple[dict, dict]:
    """(model section, args section) of a config file."""
    data = load_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{path}: no 'model:' section")
    return data["model"], data.get("args") or {}


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


def state_dict_mismatch(source, expected, got, keys=None):
    """One line naming missing / unexpected / mis-shaped keys (first few of each), or None."""
    keys = set(expected) | set(got) if keys is None else keys
    missing = sorted(k for k in keys if k in expected and k not in got)
    unexpected = sorted(k for k in keys if k in got and k not in expected)
    shaped = sorted(f"{k} {list(got[k].shape)} vs model {list(expected[k].shape)}"
                    for k in keys if k in expected and k in got and got[k].shape != expected[k].shape)
    parts = [f"{name} {len(items)}: {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}"
             for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped))
             if items]
    return f"{source}: state dict does not fit the model ({'; '.join(parts)})" if parts else None


def load_state_dict_strict(model, state_dict, source="state dict", assign=False):
    """Strict load that reports every kind of mismatch in one ValueError line.

    `assign=True` adopts the given tensors, for models built on the meta device."""
    message = state_dict_mismatch(source, model.state_dict(), state_dict)
    if message:
        raise ValueError(message)
    for key, tensor in state_dict.items():  # NaN weights would give black images, not an error
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{source}: tensor '{key}' holds non-finite values (NaN or infinity): the weights are "
                             f"damaged")
    model.load_state_dict(state_dict, strict=True, assign=assign)


# Our attribute path -> the published state-dict key, as prefixes. The published model calls its
# transformer `llama` (its code began as Llama's); ours is not Llama, so the attribute says what it is.
# The keys stay the published ones in both directions, through the hooks below: published checkpoints
# and the parity fixtures load unchanged, and the published code reads the checkpoints this code
# writes. Everything keyed by state-dict names (checkpoints, EMA, weights_init's position tables, the
# initialisation fixtures) sees the published keys; only attribute access and `named_parameters` see
# ours.
PUBLISHED_KEYS = {"transformer.": "llama."}
# The tables with one row per position id (all scales, smallest first, then any special ids): their
# length depends on the model's scales, everything else does not.
POSITION_TABLES = ("embed_positions.weight", "llama.rotary_emb.position_embeddings.parametrizations.weight.original")


def _renamed(name: str, prefix: str, renames: dict) -> str:
    for old, new in renames.items():
        if name.startswith(prefix + old):
            return prefix + new + name[len(prefix + old):]
    return name


def _rename_keys(state: dict, prefix: str, renames: dict):
    """Rename, in place and in order, the keys of `state` under `prefix`."""
    items = [(_renamed(key, prefix, renames), value) for key, value in state.items()]
    state.clear()
    state.update(items)


def _publish_keys(module, state, prefix, local_metadata, renames):
    """state_dict's post-hook: the published keys, and the per-module metadata (versions, keyed by
    module path) renamed alike so that the file is what the published model writes."""
    _rename_keys(state, prefix, renames)
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        items = [(_renamed(path + ".", prefix, renames)[:-1], value) for path, value in metadata.items()]
        metadata.clear()
        metadata.update(items)


def _own_keys(module, state, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs, renames):
    """load_state_dict's pre-hook: our names, on the copy torch made. The metadata is the caller's and
    stays as it is; no module under a renamed one reads its version."""
    _rename_keys(state, prefix, {new: old for old, new in renames.items()})


def use_published_keys(module, renames: dict = PUBLISHED_KEYS):
    """Make `module.state_dict()` write, and `module.load_state_dict` read, the published keys (also
    where `module` sits inside a wrapper, whose prefix the hooks receive)."""
    module.register_state_dict_post_hook(partial(_publish_keys, renames=renames))
    module.register_load_state_dict_pre_hook(partial(_own_keys, renames=renames))
