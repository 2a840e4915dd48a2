"""Saving and restoring the training state in the published layout, atomically.

An output folder holds `checkpoint-last.pth` (after every epoch), `checkpoint-<epoch>.pth` (kept
ones), `config.yaml` (`model:` + `args:`), `args.yaml` (every option of the run) and
`autoenc/autoencoder_config.yaml`, so that `models.load_model(folder)` works wherever the folder goes.
Every file is written atomically (common/files.py), so an interrupted save leaves the previous file
intact.
"""
import copy
from pathlib import Path

import yaml

from common.files import atomic_copy, atomic_torch_save, atomic_write_text
from models.checkpoint import checkpoint_paths, load_checkpoint_file, resolve_path

LAST = "checkpoint-last.pth"
AUTOENC_CONFIG = Path("autoenc") / "autoencoder_config.yaml"


def epoch_checkpoint_name(epoch: int) -> str:
    return f"checkpoint-{epoch}.pth"


def save_training_checkpoint(output_dir, state: dict, keep: bool) -> Path:
    """Write checkpoint-last.pth; with `keep`, also checkpoint-<state['epoch']>.pth (a hard link
    to the same bytes where the file system allows, else a copy)."""
    output_dir = Path(output_dir)
    last = atomic_torch_save(output_dir / LAST, state)
    if keep:
        atomic_copy(last, output_dir / epoch_checkpoint_name(state["epoch"]))
    return last


def training_state(model_state: dict, ema_state: dict | None, optimizer, scaler, epoch: int, args) -> dict:
    """The published checkpoint dictionary (SPEC 8)."""
    return {"model": model_state, "model_ema": ema_state, "optimizer": optimizer.state_dict(), "epoch": epoch,
            "scaler": scaler.state_dict(), "args": args}


def load_training_checkpoint(path) -> tuple[dict, Path]:
    """(checkpoint dict, its file) from a checkpoint file or a run folder."""
    ckpt_path, _ = checkpoint_paths(path)
    ckpt = load_checkpoint_file(ckpt_path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{ckpt_path}: not a generator checkpoint (no 'model' state dict)")
    return ckpt, ckpt_path


def portable_model_section(model_section: dict, config_dir, output_dir) -> dict:
    """The `model:` section for an output folder: the autoencoder config copied beside it and its
    checkpoint named by absolute path (only a fresh run reads it; checkpoints carry autoenc.* keys)."""
    section = copy.deepcopy(model_section)
    autoenc = section["autoenc"]
    source = resolve_path(autoenc["config_path"], config_dir).resolve()
    target = Path(output_dir) / AUTOENC_CONFIG
    if source != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, source.read_text())
    autoenc["config_path"] = AUTOENC_CONFIG.as_posix()
    if autoenc.get("checkpoint_path"):
        try:
            autoenc["checkpoint_path"] = str(resolve_path(autoenc["checkpoint_path"], config_dir).resolve())
        except FileNotFoundError:
            pass  # a resumed run whose autoencoder file moved: its checkpoints hold the weights
    return section


def write_run_config(output_dir, model_section: dict, recipe: dict, all_args: dict):
    """config.yaml (published `model:` + `args:` sections) and args.yaml (every option of this run)."""
    output_dir = Path(output_dir)
    atomic_write_text(output_dir / "config.yaml", yaml.safe_dump({"model": model_section, "args": recipe},
                                                                 sort_keys=False))
    atomic_write_text(output_dir / "args.yaml", yaml.safe_dump(all_args, sort_keys=False))
