"""The models a sweep samples and its points: each checkpoint read without its weights (its scales and
classes, for the checks), and each point's columns (sweep/results.py's RUN_COLUMNS) and folder.

A point is (model, steps per scale, guidance weight, sample count). Its row names the model by the
path it was first given to the sweep, its `ratio` by the model config (`single` for a single-scale
model), its steps per scale as one number when every scale takes the same (as sampling reads
`4` and `4/4/4/4` alike), else as the comma-separated list, and its `total_steps`: the serial
sampling steps over all scales (a scale takes at most one step per token; a remainder takes one
more), the x axis of the paper's Fig. 5.
"""
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from models import CheckerboardGenerator
from models.checkerboard import total_steps
from models.checkpoint import build_generator, checkpoint_paths
from models.checkpoint_format import load_checkpoint_file, read_config
from models.hub import is_hub_reference
from sampling.plan import plan_for
from sweep.config import SweepConfig

POINTS_DIR = "points"


@dataclass(frozen=True)
class SweptModel:
    given: str  # the checkpoint as this command names it
    path: str  # resolved: what the sweep's record and the points' sampling.json keep
    checkpoint_file: Path
    ratio: object  # the config's scale ratio (a number, or text such as "sqrt(2)"), or "single"
    meta: CheckerboardGenerator  # built on the meta device: scales, classes, size; no weights


def ratio_of(model_section: dict):
    """The `ratio` column: "single" for a single-scale model, else the config's scale_ratio as written
    there (2 for an absent key, the published default)."""
    if model_section.get("single_scale"):
        return "single"
    ratio = model_section.get("scale_ratio", 2)
    if isinstance(ratio, float) and ratio.is_integer():
        return int(ratio)
    return ratio


def inspect_checkpoint(path: str, use_ema: bool) -> SweptModel:
    """A checkpoint's model without loading its weights; a missing or unreadable checkpoint, config
    or autoencoder config, or a checkpoint without EMA weights when they are asked for, is one
    error naming it."""
    checkpoint_file, config_path = checkpoint_paths(path)
    section, _ = read_config(config_path)
    with torch.device("meta"):
        meta = build_generator(section, config_path.parent, load_autoencoder_weights=False, source=str(config_path))
    if use_ema:
        state = load_checkpoint_file(checkpoint_file, map_location="meta")
        if not isinstance(state, dict) or not isinstance(state.get("model_ema"), dict):
            raise ValueError(f"{checkpoint_file}: no model_ema weights, but --use_ema asks for them")
    resolved = path if is_hub_reference(path) else str(Path(path).resolve())  # a Hub reference names itself
    return SweptModel(path, resolved, checkpoint_file, ratio_of(section), meta)


def model_label(index: int, path: str) -> str:
    """The folder of a model's points: its index in the sweep and its name (a model folder's, or
    folder-file for a checkpoint file), in file-name-safe letters."""
    p = Path(path)
    name = p.name if p.is_dir() else f"{p.parent.name}-{p.stem}"
    return f"m{index}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}"


def steps_column(steps: tuple):
    return steps[0] if len(set(steps)) == 1 else ",".join(map(str, steps))


@dataclass(frozen=True)
class Point:
    model: str  # the checkpoint column
    label: str  # the model's folder under points/
    path: str  # resolved checkpoint
    ratio: object
    steps: tuple  # one value per scale, as planned
    total_steps: int
    cfg: float
    num_samples: int

    def columns(self, config: SweepConfig) -> dict:
        """The point as a row's RUN_COLUMNS."""
        return {"checkpoint": self.model, "ratio": self.ratio, "steps_per_scale": steps_column(self.steps),
                "total_steps": self.total_steps, "cfg": self.cfg, "cfg_start_step": config.cfg_start_step,
                "temperature": config.temperature, "num_samples": self.num_samples}

    def folder(self, root) -> Path:
        steps = steps_column(self.steps)
        steps = steps if isinstance(steps, int) else steps.replace(",", "-")
        return Path(root) / POINTS_DIR / self.label / f"steps{steps}_cfg{self.cfg:g}_n{self.num_samples}"

    def describe(self) -> str:
        scales = "single scale" if self.ratio == "single" else f"ratio {self.ratio}"
        return (f"{self.model} ({scales}), steps/scale {steps_column(self.steps)} ({self.total_steps} steps), cfg "
                f"{self.cfg:g}, {self.num_samples} samples")


def make_point(config: SweepConfig, model: SweptModel, name: str, label: str, steps, cfg: float,
               num_samples: int) -> Point:
    """The point, checked by the sampling library against the model (steps per scale, a sample count
    balanced over its classes, guidance for a class-conditional model)."""
    try:
        plan = plan_for(config.sample_config(model.path, steps_per_scale=list(steps) if isinstance(steps, tuple)
                                             else steps, cfg=cfg, num_samples=num_samples), model.meta)
    except ValueError as e:
        raise ValueError(f"{model.given}: {e}") from None
    return Point(name, label, model.path, model.ratio, plan.steps_per_scale,
                 total_steps(model.meta.scale_sizes, plan.steps_per_scale), cfg, num_samples)
