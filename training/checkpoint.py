"""Saving and restoring the training state in the published layout, atomically.

An output folder holds `checkpoint-last.pth` (after every epoch), `checkpoint-<epoch>.pth` (kept
ones), `config.yaml` (`model:` + `args:`), `args.yaml` (every option of the run) and
`autoenc/autoencoder_config.yaml`, so that `models.load_model(folder)` works wherever the folder goes.
Every file is written atomically (common/files.py), so an interrupted save leaves the previous file
intact. Resuming reads a checkpoint back (`Resumed`), only from the run folder's latest one
(`check_resume_point`), restores its optimizer, scaler and EMA (`restore_state`), and first makes the
kept checkpoint an interrupted save did not (`restore_kept_checkpoint`).
"""
import copy
import logging
import os
from pathlib import Path
from typing import NamedTuple

import torch
import yaml

from common.files import atomic_copy, atomic_torch_save, atomic_write_text
from models.checkpoint import build_generator, checkpoint_paths, resolve_path
from models.checkpoint_format import (CONFIG, LAST, POSITION_TABLES, epoch_checkpoint_name, load_checkpoint_file,
                                      load_state_dict_strict, read_config)

log = logging.getLogger(__name__)
AUTOENC_CONFIG = Path("autoenc") / "autoencoder_config.yaml"


def kept_epoch(epoch: int, epochs: int, save_freq: int) -> bool:
    """Whether checkpoint-<epoch>.pth is kept: every save_freq epochs and after the last one."""
    return (epoch + 1) % save_freq == 0 or epoch + 1 == epochs


def save_training_checkpoint(output_dir, state: dict, keep: bool) -> Path:
    """Write checkpoint-last.pth; with `keep`, checkpoint-<state['epoch']>.pth first and checkpoint-last.pth
    as a hard link to the same bytes (a copy where the file system has no links). In that order a run
    stopped between the two resumes from the epoch before and makes the kept file again; the other
    order would leave that epoch's kept checkpoint never made."""
    output_dir = Path(output_dir)
    last = output_dir / LAST
    if not keep:
        return atomic_torch_save(last, state)
    kept = atomic_torch_save(output_dir / epoch_checkpoint_name(state["epoch"]), state)
    return atomic_copy(kept, last)


def training_state(model_state: dict, ema_state: dict | None, optimizer, scaler, epoch: int, args) -> dict:
    """The published checkpoint dictionary (docs/method.md §9)."""
    return {"model": model_state, "model_ema": ema_state, "optimizer": optimizer.state_dict(), "epoch": epoch,
            "scaler": scaler.state_dict(), "args": args}


def load_training_checkpoint(path, resume: bool = False) -> tuple[dict, Path]:
    """(checkpoint dict, its file) from a checkpoint file or a run folder; to `resume` it must hold the
    training state too (optimizer and epoch), not only the weights."""
    ckpt_path, _ = checkpoint_paths(path)
    ckpt = load_checkpoint_file(ckpt_path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{ckpt_path}: not a generator checkpoint (no 'model' state dict)")
    if resume:
        missing = [key for key, kind in (("optimizer", dict), ("epoch", int)) if not isinstance(ckpt.get(key), kind)]
        if missing:
            raise ValueError(f"{ckpt_path} holds no training state ({' and '.join(missing)}): it cannot be resumed "
                             f"(a published or exported checkpoint?); to start a new run from its weights, pass "
                             f"--weights_init {path} instead of --resume")
    return ckpt, ckpt_path


class Resumed(NamedTuple):
    """The checkpoint a run continues from, and its file."""
    state: dict
    path: Path


def restore_state(resumed: Resumed, optimization) -> int:
    """The optimizer, loss scaler and EMA of a `training.optimization.Optimization` set to the checkpoint's
    state; returns the epoch to go on with."""
    ckpt, ckpt_path = resumed
    try:
        optimization.optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as e:
        raise ValueError(f"{ckpt_path}: its optimizer state does not fit this run's optimizer ({e})") from None
    if ckpt.get("scaler"):
        optimization.scaler.load_state_dict(ckpt["scaler"])
    if optimization.ema is not None:
        if ckpt.get("model_ema") is not None:
            optimization.ema.load_state_dict(ckpt["model_ema"], f"{ckpt_path}: model_ema")
        else:
            log.warning("%s has no model_ema: the EMA restarts from the current weights", ckpt_path)
    return ckpt["epoch"] + 1


def check_resume_point(folder, checkpoint_path, epoch: int):
    """Resuming into its own folder continues from the folder's latest checkpoint only."""
    last = Path(folder) / LAST
    if not last.is_file() or os.path.samefile(last, checkpoint_path):
        return
    last_epoch = load_checkpoint_file(last, mmap=True).get("epoch")  # mmap: no weights read
    if isinstance(last_epoch, int) and last_epoch > epoch:
        raise ValueError(f"{checkpoint_path} is epoch {epoch} but {last} is epoch {last_epoch}: continuing from "
                         f"it in {folder} would overwrite the epochs after {epoch}; pass a new --output_dir to "
                         f"continue it there")


def restore_kept_checkpoint(folder, checkpoint: dict):
    """checkpoint-<epoch>.pth of the latest epoch when the run was to keep it but was stopped before it was
    made (runs of earlier versions wrote it after checkpoint-last.pth)."""
    folder = Path(folder)
    args, epoch = checkpoint.get("args"), checkpoint.get("epoch")
    epochs, save_freq = getattr(args, "epochs", None), getattr(args, "save_freq", None)
    if not all(isinstance(v, int) and v > 0 for v in (epochs, save_freq)) or not isinstance(epoch, int):
        return
    kept = folder / epoch_checkpoint_name(epoch)
    if kept_epoch(epoch, epochs, save_freq) and not kept.exists():
        atomic_copy(folder / LAST, kept)
        log.info("made %s, which the interrupted run did not", kept)


def portable_model_section(model_section: dict, config_dir) -> dict:
    """The `model:` section for an output folder: the autoencoder config named as the copy beside it
    (`write_run_config` makes it) and its checkpoint by absolute path (only a fresh run reads it;
    checkpoints carry autoenc.* keys)."""
    section = copy.deepcopy(model_section)
    autoenc = section["autoenc"]
    autoenc["config_path"] = AUTOENC_CONFIG.as_posix()
    if autoenc.get("checkpoint_path"):
        try:
            autoenc["checkpoint_path"] = str(resolve_path(autoenc["checkpoint_path"], config_dir).resolve())
        except FileNotFoundError:
            pass  # a resumed run whose autoencoder file moved: its checkpoints hold the weights
    return section


def run_config_text(model_section: dict, config_dir, recipe: dict) -> str:
    """config.yaml of a run folder: the portable `model:` section and the run's recipe as `args:`. Two
    runs with the same text are the same run (see training/run_folder.py)."""
    return yaml.safe_dump({"model": portable_model_section(model_section, config_dir), "args": recipe},
                          sort_keys=False)


def write_run_config(output_dir, model_section: dict, config_dir, recipe: dict, all_args: dict):
    """config.yaml (published `model:` + `args:` sections), a copy of the autoencoder config beside it,
    and args.yaml (every option of this run)."""
    output_dir = Path(output_dir)
    source = resolve_path(model_section["autoenc"]["config_path"], config_dir).resolve()
    target = output_dir / AUTOENC_CONFIG
    if source != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, source.read_text())
    atomic_write_text(output_dir / CONFIG, run_config_text(model_section, config_dir, recipe))
    atomic_write_text(output_dir / "args.yaml", yaml.safe_dump(all_args, sort_keys=False))


def checkpoint_scale_sizes(checkpoint_path) -> list[int]:
    """The scales of the model a checkpoint was trained with, from the config.yaml beside it."""
    _, config_path = checkpoint_paths(checkpoint_path)
    model_section, _ = read_config(config_path)
    with torch.device("meta"):
        model = build_generator(model_section, config_path.parent, load_autoencoder_weights=False,
                                source=str(config_path))
    return list(model.scale_sizes)


def _scale_offsets(scales) -> dict:
    """scale size -> its first position id (ids run over the scales, smallest first)."""
    scales = list(scales)
    return {s: sum(t * t for t in scales[:i]) for i, s in enumerate(scales)}


def remap_positions(source: torch.Tensor, source_scales, target: torch.Tensor, target_scales) -> torch.Tensor:
    """`target` (a position table of a model with `target_scales`) with the rows of every scale both models
    have, and the special rows after the scales, taken from `source`; rows of other scales are kept."""
    extra = source.shape[0] - sum(s * s for s in source_scales)
    if extra != target.shape[0] - sum(s * s for s in target_scales) or extra < 0:
        raise ValueError(f"position table of {source.shape[0]} rows does not fit scales {list(source_scales)}")
    src_at, dst_at = _scale_offsets(source_scales), _scale_offsets(target_scales)
    out = target.clone()
    for s in set(source_scales) & set(target_scales):
        out[dst_at[s]:dst_at[s] + s * s] = source[src_at[s]:src_at[s] + s * s]
    if extra:
        out[-extra:] = source[-extra:]
    return out


def init_weights_from(model, state: dict, checkpoint_path) -> list[str]:
    """Load a checkpoint's model weights to start a new run. A model with other scales (e.g. L-4x from
    L-2x) differs only in its position tables: those get the rows of the scales both models have and keep
    their initialisation elsewhere. Returns the names of the tables copied that way."""
    own = model.state_dict()
    different = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not different:
        load_state_dict_strict(model, state, str(checkpoint_path))
        return []
    others = [k for k in different if k not in POSITION_TABLES]
    if others:
        raise ValueError(f"{checkpoint_path}: weights_init needs the same architecture; {others[0]} has shape "
                         f"{list(state[others[0]].shape)} there but {list(own[others[0]].shape)} here")
    source_scales = checkpoint_scale_sizes(checkpoint_path)
    merged = dict(state)
    for key in different:
        merged[key] = remap_positions(state[key], source_scales, own[key], list(model.scale_sizes))
    load_state_dict_strict(model, merged, str(checkpoint_path))
    return different
