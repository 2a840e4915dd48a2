"""Which samples a run draws: its config checked against the model (`plan_for`), and sample i drawn
from its own stream (sampling/seeds.py) with its own label, alone or in any batch (`draw`).

Labels by global index: FID mode gives sample i class i % num_classes (N a multiple of the class
count holds N / num_classes of each); --classes gives classes[i % len(classes)]; random classes are
drawn first from sample i's own stream; an unconditional model has none.
"""
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from models import CheckerboardGenerator
from models.checkerboard import total_steps
from models.sampler import GenerationOutput, Sampler, check_guidance_start
from sampling.config import DEFAULT_CFG, DEFAULT_NUM_SAMPLES, FID_NUM_SAMPLES, SampleConfig
from sampling.sample_io import to_uint8
from sampling.seeds import sample_generators


@dataclass(frozen=True)
class SamplePlan:
    """Everything that fixes a run's samples, checked against its model."""

    num_samples: int
    cfg: float
    cfg_start_step: int
    steps_per_scale: tuple[int, ...]
    temperature: float
    seed: int
    label_mode: str  # "balanced" (FID mode), "classes", "random" or "none" (an unconditional model)
    num_classes: int | None
    classes: tuple[int, ...] | None = None

    def as_dict(self) -> dict:
        """As JSON keeps it (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def plan_for(config: SampleConfig, model: CheckerboardGenerator) -> SamplePlan:
    """The checks that need the model (the config checked its own values when it was made): one step
    count per scale, classes in range, guidance and classes only with a class-conditional model,
    guidance starting at a step there is, a class-balanced FID count. The draws of the plan are not
    checked again."""
    try:
        steps = tuple(model.steps_per_scale_list(config.steps_per_scale))
    except ValueError as e:
        raise ValueError(f"--steps_per_scale: {e}") from None
    fixed = dict(cfg_start_step=config.cfg_start_step, steps_per_scale=steps, temperature=config.temperature,
                 seed=config.seed)
    if not model.config.class_cond:
        if config.cfg:
            raise ValueError(f"--cfg {config.cfg}: this model is unconditional, guidance needs a "
                             f"class-conditional model (use --cfg 0)")
        if config.classes is not None or config.random_classes:
            raise ValueError("this model is unconditional: drop --classes/--random_classes")
        num = config.num_samples or (FID_NUM_SAMPLES if config.fid else DEFAULT_NUM_SAMPLES)
        return SamplePlan(num, 0.0, label_mode="none", num_classes=None, **fixed)

    n_cls = model.config.num_classes
    fixed["cfg"] = DEFAULT_CFG if config.cfg is None else config.cfg
    check_guidance_start(fixed["cfg"], config.cfg_start_step, total_steps(model.scale_sizes, steps))
    if config.classes is not None:
        bad = [c for c in config.classes if not 0 <= c < n_cls]
        if bad:
            raise ValueError(f"--classes: class {bad[0]} is out of range, this model has classes 0..{n_cls - 1}")
        return SamplePlan(config.num_samples or len(config.classes), label_mode="classes", num_classes=n_cls,
                          classes=tuple(config.classes), **fixed)
    if config.fid:
        num = config.num_samples or FID_NUM_SAMPLES
        if num % n_cls:
            raise ValueError(f"--num_samples {num} is not a multiple of the model's {n_cls} classes "
                             f"(--fid needs the same number of samples per class)")
        return SamplePlan(num, label_mode="balanced", num_classes=n_cls, **fixed)
    return SamplePlan(config.num_samples or DEFAULT_NUM_SAMPLES, label_mode="random", num_classes=n_cls, **fixed)


def balanced_labels(indices, num_classes: int) -> torch.Tensor:
    return torch.as_tensor(indices, dtype=torch.long) % num_classes


def cycled_labels(indices, classes) -> torch.Tensor:
    table = torch.tensor(classes, dtype=torch.long)
    return table[torch.as_tensor(indices, dtype=torch.long) % len(classes)]


def random_labels(generators: list[torch.Generator], num_classes: int) -> torch.Tensor:
    return torch.stack([torch.randint(num_classes, (), generator=g, device=g.device) for g in generators]).cpu()


def labels_for(plan: SamplePlan, indices, generators: list[torch.Generator]) -> torch.Tensor | None:
    """The classes of these global indices (None for an unconditional model)."""
    if plan.label_mode == "balanced":
        return balanced_labels(indices, plan.num_classes)
    if plan.label_mode == "classes":
        return cycled_labels(indices, plan.classes)
    if plan.label_mode == "random":
        return random_labels(generators, plan.num_classes)
    return None


def draw(sampler: Sampler, plan: SamplePlan, indices: list[int], device, return_trace: bool = False
         ) -> GenerationOutput:
    """The samples of these global indices, as one batch: the plan was checked by `plan_for`, its labels
    are in range by construction and each sample has its generator, so the sampler checks nothing."""
    generators = sample_generators(plan.seed, indices, device)
    labels = labels_for(plan, indices, generators)
    return sampler.generate_unchecked(None if labels is None else labels.to(device), len(indices), plan.cfg,
                                      plan.cfg_start_step, plan.steps_per_scale, plan.temperature, generators,
                                      return_trace)


def draw_images(sampler: Sampler, plan: SamplePlan, indices: list[int], batch_size: int, device,
                progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 images (n, H, W, 3) and labels (n,) (None for an unconditional model) of these global
    indices, drawn `batch_size` at a time; `progress(k)` after each batch of k."""
    size = sampler.model.config.img_size
    images, labels = [np.zeros((0, size, size, 3), np.uint8)], []
    for lo in range(0, len(indices), batch_size):
        out = draw(sampler, plan, indices[lo:lo + batch_size], device)
        images.append(to_uint8(out.images))
        if out.labels is not None:
            labels.append(out.labels.cpu().numpy())
        if progress is not None:
            progress(len(out.images))
    return np.concatenate(images), np.concatenate(labels) if labels else None
