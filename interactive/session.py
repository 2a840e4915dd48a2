"""One model shown interactively: loaded once, with one `Sampler` that every draw reuses (its
compiled steps and CUDA graphs are built once per batch shape), and each draw made with its trace.

    session = Session(load_model("outputs/demo/generator", use_ema=True))
    drawing = session.draw(session.plan(classes=[3, 7], count=4, cfg=2.5, cfg_start_step=1,
                                        steps_per_scale="4", temperature=0.7, seed=0))
    drawing.images, drawing.frames[t], drawing.step_maps, drawing.seconds

The settings are main_sample.py's (a `SampleConfig`, checked when made and against the model by
`plan_for`) and sample i is drawn from main_sample.py's stream for (seed, i): the app shows exactly
the samples that `python main_sample.py --classes ... --seed ...` writes.
"""
import time
from dataclasses import dataclass

import numpy as np
import torch

from common.config import Layer, make
from models import CheckerboardGenerator
from models.sampler import Sampler
from sampling import figures
from sampling.config import SampleConfig
from sampling.plan import SamplePlan, draw, plan_for
from sampling.sample_io import to_uint8

from .class_names import class_names

MAX_COUNT = 16  # samples per draw: a page of images, and a bound on the memory one request can ask for
MIN_SHOWN = 128  # pixels: smaller samples (the 32 px digits) are enlarged, nearest, so that their cells show


@dataclass
class Drawing:
    images: np.ndarray  # (B, H, W, 3) uint8, enlarged to at least MIN_SHOWN pixels
    captions: list[str]  # per image: its class ("" for an unconditional model)
    frames: list[np.ndarray]  # per sampling step: the samples side by side, the cells drawn so far shown
    frame_titles: list[str]  # per sampling step, e.g. "8x8, step 2/4 (step 7 of 13)"
    step_maps: np.ndarray  # per sample and scale: the step each cell was drawn at and its entropy
    seconds: float  # the generation alone: every step and the decoder, not the figures

    def summary(self, device) -> str:
        count = len(self.images)
        return (f"{count} sample{'s' if count > 1 else ''} in {self.seconds:.2f} s "
                f"({len(self.frames)} steps, {self.seconds / count:.3f} s per sample, {device})")


class Session:
    def __init__(self, model: CheckerboardGenerator, compile: bool = False):
        """`compile`: compiled steps and CUDA graphs, on a GPU only (on a CPU the compilation would
        cost more than the draws it speeds up)."""
        self.model = model
        self.sampler = Sampler(model, compile=compile and model.device.type == "cuda")
        self.class_names = class_names(model.config.num_classes) if model.config.class_cond else None

    def plan(self, classes, count, cfg, cfg_start_step, steps_per_scale, temperature, seed) -> SamplePlan:
        """The settings as main_sample.py checks its options (ValueError, one line naming the value):
        classes (indices; cycled over the samples, random classes when empty), count, guidance weight
        and first guided step, steps per scale (a number, or text: "4" or "1,4,4,4"), temperature, seed."""
        values = {"classes": list(classes) if classes else None, "num_samples": count, "cfg": cfg,
                  "cfg_start_step": cfg_start_step, "steps_per_scale": steps_per_scale, "temperature": temperature,
                  "seed": seed}
        config = make(SampleConfig, Layer(values, from_text=True))
        if config.num_samples > MAX_COUNT:
            raise ValueError(f"count must be <= {MAX_COUNT}, got {config.num_samples}")
        return plan_for(config, self.model)

    def draw(self, plan: SamplePlan) -> Drawing:
        """The plan's samples, drawn as one batch with their trace, and the figures of it."""
        model, device = self.model, self.model.device
        start = time.perf_counter()
        out = draw(self.sampler, plan, list(range(plan.num_samples)), device, return_trace=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        images = to_uint8(out.images)
        labels = None if out.labels is None else out.labels.tolist()
        zoom = -(-MIN_SHOWN // images.shape[1])
        fills = figures.fill_frames(model.autoencoder, out.tokens, out.steps, model.config.img_size)
        titles = figures.step_titles(out.steps)
        return Drawing(images=enlarge(images, zoom),
                       captions=[self.class_names[c] for c in labels] if labels else [""] * len(images),
                       frames=[figures.image_grid(enlarge(f, zoom)) for f in fills],
                       frame_titles=[f"{t.replace(chr(10), ', ')} (step {i + 1} of {len(fills)})"
                                     for i, t in enumerate(titles)],
                       step_maps=figures.step_entropy_figure(images, out.steps, out.entropy, labels),
                       seconds=seconds)


def enlarge(images: np.ndarray, zoom: int) -> np.ndarray:
    """(B, H, W, 3) -> (B, zoom*H, zoom*W, 3), each pixel repeated."""
    return images.repeat(zoom, axis=1).repeat(zoom, axis=2)
