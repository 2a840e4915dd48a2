"""Block-by-block sampling (docs/method.md section 7): `Sampler` owns all generation state.

    sampler = Sampler(model, compile=True)
    out = sampler.generate(labels=torch.tensor([207, 360]), cfg=1.5, temperature=1.0)

Written for speed in the gpt-fast manner, next to a model that knows nothing of it: the sampler
allocates the KV caches once at a fixed shape and hands them to the model's transformer pass, which
writes them in place; each step's shapes depend only on the block size; guidance runs both halves
as one batch; the class conditioning is computed once; all random draws are made up front (the
exponential race), so the whole generation runs without a host sync. With `compile=True` the step
functions are compiled and, on a GPU, the whole generation (every step and the decoder) is captured
as ONE CUDA graph per batch shape and options, and replayed: at batch 1 a sampler pays for kernel
launches, not arithmetic.
"""
import math
import operator
from dataclasses import dataclass

import torch

from common.config import FLOAT32_MAX, float32_problem

from .checkerboard import block_sizes
from .generator import CheckerboardGenerator, Conditioning
from .layout import Layout

# The published sampler guides from step 5 on (counted over all scales). Every other default of the
# guidance start (sampling/config.py re-exports it to the configs, scripts and training's evaluation) is
# this one; it lives here, not in sampling/, so that models/ imports nothing above it.
DEFAULT_CFG_START_STEP = 5

# Compiled step functions specialise on the block size, the scale and the options (static shapes):
# enough room for several settings in one process without touching torch's global limit.
RECOMPILE_LIMIT = 64


@dataclass
class GenerationOutput:
    images: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    tokens: list  # per scale (B, s, s) code indices
    labels: torch.Tensor | None  # (B,) the classes sampled for, None if unconditional
    steps: list | None = None  # per scale (B, s, s): the step at which each cell was sampled
    entropy: list | None = None  # per scale (B, s, s): entropy of the distribution it was drawn from


@dataclass(frozen=True)
class BlockSchedule:
    """The blocks of one steps-per-scale setting: the device layout, each block's sequence
    indices (n,) and (start, end), and the scale each block belongs to."""

    layout: Layout
    block_tokens: tuple
    block_bounds: tuple
    block_scale: tuple


def exponential_noise(shape, device, generator):
    """Exp(1) noise (B, ...); a list of generators gives each sample its own stream, so a sample's
    draws depend on its own seed only (not on the batch it is in)."""
    out = torch.empty(shape, device=device)
    if isinstance(generator, (list, tuple)):
        for row, g in zip(out, generator):
            row.exponential_(generator=g)
        return out
    return out.exponential_(generator=generator)


def allocate_caches(model: CheckerboardGenerator, rows: int) -> list:
    """Per layer, zeroed (keys, values) buffers (rows, H, L, d) for the whole sequence. Zeros,
    because masked slots still enter attention's weighted sum (with weight 0)."""
    layers, shape = model.kv_cache_shape(rows)
    new = lambda: torch.zeros(shape, dtype=model.dtype, device=model.device)  # noqa: E731
    return [(new(), new()) for _ in range(layers)]


def class_prefill(model: CheckerboardGenerator, conditioning: Conditioning, layout: Layout, caches):
    """Writes the class token's keys and values into the caches."""
    position = torch.zeros(1, dtype=torch.long, device=conditioning.embedding.device)
    model.hidden(conditioning.embedding[:, None], conditioning, layout, position, caches)


def block_step(model: CheckerboardGenerator, layout: Layout, tokens, src, seq_codes, conditioning, caches,
               guided: bool, cfg_weight, noise, temperature: float, with_entropy: bool):
    """One block: inputs, transformer pass over the block with the caches, guided logits, draw.

    tokens (n,) sequence indices of the block; src (B, n, C) its embedded sources; seq_codes
    (B, N, C) embedded codes sampled so far. Returns indices (B, n), their embedded codes
    (B, n, C), the entropy of each draw (B, n) or None, and the largest |logit| before and after
    guidance (2,), NaN where one is NaN (see `check_logit_peaks`).
    """
    x = model.block_inputs(layout, tokens, src, seq_codes)  # (B, n, C)
    if guided:
        x = torch.cat([x, x])  # conditional and "no class" halves in one batch
    h = model.hidden(x, conditioning, layout, tokens + model.sequence.n_cls, caches)
    logits = model.logits(h).float()  # (rows, n, V)
    model_peak = logits.abs().amax()
    if guided:
        cond, uncond = logits.chunk(2)
        logits = cond + cfg_weight * (cond - uncond)  # weight 0 before cfg_start_step: exactly cond
    peaks = torch.stack([model_peak, logits.abs().amax()])
    if temperature == 0:
        idx = logits.argmax(-1)
    else:
        probs = torch.softmax(logits / temperature, dim=-1)
        idx = (probs / noise).argmax(-1)  # the exponential race: a draw without a host sync
    entropy = None
    if with_entropy:
        logp = torch.log_softmax(logits, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
    return idx, model.embed_codes(idx), entropy, peaks


def sources_from_sequence(model: CheckerboardGenerator, seq_idx, k: int):
    """Embedded sources (B, n_k, C) of scale k from the finished scale k-1 of the sampled sequence."""
    previous = model.sequence.to_grid(seq_idx, k - 1) if k else None  # (B, s, s)
    return model.scale_sources(previous, k, seq_idx.shape[0])


def decode_tokens(model: CheckerboardGenerator, seq_idx):
    """RGB images (B, 3, H, W) from the sampled sequence's last scale, clamped to [-1, 1]: the decoder
    overshoots (the L-2x samples reach -1.11 and 1.17), and every use of an image (pixels, a metric,
    a figure) means the image range; the published code clamps later, when it converts to uint8."""
    return model.decode(model.sequence.to_grid(seq_idx, len(model.scale_sizes) - 1)).clamp(-1, 1)


def _compiled(fn):
    return torch.compile(fn, fullgraph=True, dynamic=False, recompile_limit=RECOMPILE_LIMIT,
                         isolate_recompiles=True)


class Sampler:
    """Generation state of one model: KV caches, compiled step functions, CUDA graphs, noise.

    Eager, the caches are allocated once per batch shape and reused. With `compile=True` the step
    functions are compiled for this sampler, and on a GPU each batch shape and set of options gets
    its own captured CUDA graph, with its own caches and input buffers.
    """

    def __init__(self, model: CheckerboardGenerator, compile: bool = False):
        self.model = model
        self.compile = compile
        self.prefill_fn = _compiled(class_prefill) if compile else class_prefill
        self.step_fn = _compiled(block_step) if compile else block_step
        self.sources_fn = _compiled(sources_from_sequence) if compile else sources_from_sequence
        self.decode_fn = _compiled(decode_tokens) if compile else decode_tokens
        self.schedules = {}  # per steps setting and model device: a handful, chosen by the caller
        self.caches = None
        self.graphs = {}  # CUDA graphs per batch shape and options

    def schedule(self, steps_per_scale) -> BlockSchedule:
        """The blocks of a steps setting, on the model's device (where its layout is built)."""
        steps, device = self.model.steps_per_scale_list(steps_per_scale), self.model.device
        key = (steps, str(device))
        if key not in self.schedules:
            bounds, scale_of, start = [], [], 0
            for k, (s, p) in enumerate(zip(self.model.scale_sizes, steps)):
                for size in block_sizes(s * s, p):
                    bounds.append((start, start + size))
                    scale_of.append(k)
                    start += size
            tokens = tuple(torch.arange(lo, hi, device=device) for lo, hi in bounds)
            self.schedules[key] = BlockSchedule(self.model.layout(steps), tokens, tuple(bounds), tuple(scale_of))
        return self.schedules[key]

    def run_blocks(self, schedule: BlockSchedule, caches, B: int, labels, cfg_weights, noise, guided: bool,
                   temperature: float, with_entropy: bool):
        """All steps and the decoder, on the device only: no host sync, no host data, so that it
        can be captured as one CUDA graph. labels (B,) or None; cfg_weights (steps,) the guidance
        weight of each step; noise (B, N, V) Exp(1) draws or None at temperature 0.
        Returns indices (B, N) in sequence order, entropies (B, N) or None, images, and the largest
        |logit| of all steps before and after guidance (2,)."""
        model, layout = self.model, schedule.layout
        device = layout.block.device
        conditioning = None
        if labels is not None:
            rows = torch.cat([labels, torch.full_like(labels, model.config.num_classes)]) if guided else labels
            conditioning = model.condition(rows)
            self.prefill_fn(model, conditioning, layout, caches)
        seq_idx = torch.zeros(B, model.num_tokens, dtype=torch.long, device=device)
        seq_codes = torch.zeros(B, model.num_tokens, model.width, dtype=model.dtype, device=device)
        seq_entropy = torch.zeros(B, model.num_tokens, device=device) if with_entropy else None
        scale_start = {}
        peaks = torch.zeros(2, device=device)
        blocks = zip(schedule.block_bounds, schedule.block_tokens, schedule.block_scale)
        for step, ((lo, hi), tokens, k) in enumerate(blocks):
            if k not in scale_start:
                src, scale_start[k] = self.sources_fn(model, seq_idx, k), lo
            block_src = src[:, lo - scale_start[k]:hi - scale_start[k]].contiguous()  # same strides for any block
            block_noise = None if noise is None else noise[:, lo:hi]
            idx, codes, entropy, step_peaks = self.step_fn(model, layout, tokens, block_src, seq_codes, conditioning,
                                                            caches, guided, cfg_weights[step], block_noise, temperature,
                                                            with_entropy)
            peaks = torch.maximum(peaks, step_peaks)  # NaN stays NaN
            seq_idx[:, lo:hi] = idx
            seq_codes[:, lo:hi] = codes
            if with_entropy:
                seq_entropy[:, lo:hi] = entropy
        return seq_idx, seq_entropy, self.decode_fn(model, seq_idx), peaks

    def _caches_for(self, rows: int) -> list:
        """The eager caches, kept while the shape stays (compiled step functions keep pointing at
        the same memory)."""
        model = self.model
        k = None if self.caches is None else self.caches[0][0]
        if k is None or k.shape != model.kv_cache_shape(rows)[1] or k.dtype != model.dtype or k.device != model.device:
            self.caches = allocate_caches(model, rows)
        return self.caches

    @torch.no_grad()
    def generate(self, labels=None, batch_size=None, cfg=0.0, cfg_start_step=DEFAULT_CFG_START_STEP,
                 steps_per_scale=None, temperature=1.0, generator=None, return_trace=False) -> GenerationOutput:
        """Samples for `labels` (B,) (a class-conditional model; random classes from `generator`
        when None) or `batch_size` (unconditional). cfg: guidance weight, from step cfg_start_step
        (steps count blocks from 0 over all scales); steps_per_scale: an int, one per scale, or None
        for the model's default; temperature 0 is argmax; generator: a torch.Generator or one per
        sample; return_trace: also the step and entropy of every cell.

        The library's entry for direct calls: every argument is checked here (ValueError naming it).
        Callers whose values were checked where they entered use `generate_unchecked`."""
        model = self.model
        cfg, temperature = finite_number("cfg", cfg), finite_number("temperature", temperature)
        cfg_start_step = whole_number("cfg_start_step", cfg_start_step)
        if cfg > 0 and not model.config.class_cond:
            raise ValueError(f"cfg={cfg} needs a class-conditional model; this one is unconditional (use cfg 0)")
        if batch_size is not None:
            batch_size = whole_number("batch_size", batch_size, minimum=1)
        per_sample = isinstance(generator, (list, tuple))
        if per_sample and batch_size is None and labels is None:
            batch_size = len(generator)
        labels, B = resolve_labels(model, labels, batch_size, generator, model.device)
        if per_sample and len(generator) != B:
            # one stream per sample: a row without its own generator would keep uninitialised noise
            raise ValueError(f"generator: {len(generator)} generators for {B} samples (pass one per sample, or one "
                             f"torch.Generator for the batch)")
        check_guidance_start(cfg, cfg_start_step, len(self.schedule(steps_per_scale).block_bounds))
        return self.generate_unchecked(labels, B, cfg, cfg_start_step, steps_per_scale, temperature, generator,
                                       return_trace)

    @torch.no_grad()
    def generate_unchecked(self, labels, batch_size: int, cfg: float, cfg_start_step: int, steps_per_scale,
                           temperature: float, generator, return_trace: bool = False) -> GenerationOutput:
        """`generate` without its checks, for values checked where they entered (sampling/plan.py's
        plans, checked against the model by `plan_for`): labels (B,) class indices (long, on the model's
        device, in range) for a class-conditional model, else None; batch_size B; generator one
        torch.Generator or one per sample. Wrong values here give wrong samples, not an error."""
        model, B = self.model, batch_size
        device, dtype = model.device, model.dtype
        schedule = self.schedule(steps_per_scale)
        guided = cfg > 0
        cfg_weights = torch.tensor([cfg if guided and t >= cfg_start_step else 0.0
                                    for t in range(len(schedule.block_bounds))]).to(device)
        noise = None
        if temperature > 0:
            noise = exponential_noise((B, model.num_tokens, model.codebook_size), device, generator)

        if self.compile and device.type == "cuda":
            key = (B, schedule.block_bounds, guided, float(temperature), return_trace, dtype)
            if key not in self.graphs:
                self.graphs[key] = GraphedGeneration(self, schedule, B, labels, cfg_weights, noise, guided, temperature,
                                                     return_trace)
            seq_idx, seq_entropy, images, peaks = self.graphs[key](labels, cfg_weights, noise)
        else:
            caches = self._caches_for(2 * B if guided else B)
            seq_idx, seq_entropy, images, peaks = self.run_blocks(schedule, caches, B, labels, cfg_weights, noise,
                                                                  guided, temperature, return_trace)
        check_logit_peaks(peaks, cfg, temperature)  # one host sync per batch, after the whole generation

        grids = lambda seq: [model.sequence.to_grid(seq, k) for k in range(len(model.scale_sizes))]  # noqa: E731
        out = GenerationOutput(images=images, labels=labels, tokens=grids(seq_idx))
        if return_trace:
            out.steps = grids(schedule.layout.block.expand(B, -1))
            out.entropy = grids(seq_entropy)
        return out


class GraphedGeneration:
    """`Sampler.run_blocks` captured once as a CUDA graph for one batch shape and set of options.

    Labels, guidance weights and noise are copied into static buffers before each replay. The graph
    owns its KV caches, so a run with another batch shape (with caches of its own) cannot pull
    memory from under it."""

    def __init__(self, sampler: Sampler, schedule: BlockSchedule, B, labels, cfg_weights, noise, guided, temperature,
                 with_entropy):
        self.labels = None if labels is None else labels.clone()
        self.cfg_weights = cfg_weights.clone()
        self.noise = None if noise is None else noise.clone()
        self.caches = allocate_caches(sampler.model, 2 * B if guided else B)
        args = (schedule, self.caches, B, self.labels, self.cfg_weights, self.noise, guided, temperature, with_entropy)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up compiles and autotunes outside the capture
            for _ in range(2):
                sampler.run_blocks(*args)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = sampler.run_blocks(*args)

    def __call__(self, labels, cfg_weights, noise):
        if labels is not None:
            self.labels.copy_(labels)
        self.cfg_weights.copy_(cfg_weights)
        if noise is not None:
            self.noise.copy_(noise)
        self.graph.replay()
        return tuple(None if t is None else t.clone() for t in self.outputs)


def finite_number(name: str, value, minimum: float = 0.0) -> float:
    """`value` as a float, or ValueError naming it: NaN and infinity would silently mean no guidance or
    all-zero tokens."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum:g}, got {value!r}")
    problem = float32_problem(number)  # the sampler computes in float32
    if problem:
        raise ValueError(f"{name} must be {problem}, got {value!r}")
    return number


class NonFiniteSamplingError(ValueError):
    """Probabilities that are not numbers: the draws would be silent garbage."""


def check_logit_peaks(peaks: torch.Tensor, cfg: float, temperature: float) -> None:
    """From the largest |logit| before and after guidance, the setting that made the sampling
    probabilities non-finite, if one did: softmax turns an infinite logit into NaN."""
    model_peak, guided_peak = peaks.tolist()
    if not math.isfinite(model_peak):
        raise NonFiniteSamplingError("non-finite probabilities: the model's logits are NaN or infinite (are its "
                                     "weights damaged?)")
    if not math.isfinite(guided_peak):
        raise NonFiniteSamplingError(f"non-finite probabilities: cfg {cfg:g} makes the guided logits overflow "
                                     f"float32 (the model's reach {model_peak:.3g}); lower the guidance weight")
    if temperature > 0 and guided_peak / temperature > FLOAT32_MAX:
        raise NonFiniteSamplingError(f"non-finite probabilities: temperature {temperature:g} makes logits / "
                                     f"temperature overflow float32 (the logits reach {guided_peak:.3g}); raise the "
                                     f"temperature")


def check_guidance_start(cfg: float, cfg_start_step: int, num_steps: int) -> None:
    """Guidance that starts after the last step guides nothing: refused, not drawn as unguided samples
    recorded as guided ones."""
    if cfg > 0 and cfg_start_step >= num_steps:
        raise ValueError(f"cfg_start_step {cfg_start_step} is at or beyond the last step: these steps per scale "
                         f"sample {num_steps} steps (0..{num_steps - 1}), so cfg {cfg:g} would guide none of them; "
                         f"start guidance below {num_steps}, or sample with cfg 0")


def whole_number(name: str, value, minimum: int = 0) -> int:
    """`value` as an int (int-like only: 2.5 is refused, not rounded), or ValueError naming it."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if isinstance(value, bool) or number is None or number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def resolve_labels(model: CheckerboardGenerator, labels, batch_size, generator, device):
    """(labels or None, batch size): random classes when a conditional model gets none."""
    if model.config.class_cond and labels is None:
        if batch_size is None:
            raise ValueError("pass labels or batch_size")
        g = generator[0] if isinstance(generator, (list, tuple)) else generator
        labels = torch.randint(0, model.config.num_classes, (batch_size,), generator=g,
                               device=g.device if g is not None else "cpu")
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be a 1-D sequence of class indices, got {labels.dtype} of shape "
                             f"{tuple(labels.shape)}")
        labels = labels.to(device=device, dtype=torch.long)
        model.check_labels(labels)
        return labels, labels.shape[0]
    model.check_labels(None)
    if batch_size is None:
        raise ValueError("an unconditional model needs batch_size")
    return None, batch_size
