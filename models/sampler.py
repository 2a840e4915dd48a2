"""Block-by-block sampling with a static KV cache (SPEC 7).

Written for speed in the gpt-fast manner: the KV cache is allocated once at a fixed shape and
written in place; each step's shapes depend only on the block size; guidance runs both
halves as one batch; the AdaLN modulations, which depend on the class only, are computed
once; all random draws are made up front (the exponential race), so the whole generation
runs without a host sync. With `compile=True` the step functions are compiled and, on a
GPU, the whole generation (17 steps and the decoder) is captured as ONE CUDA graph per
batch shape and replayed: launch overhead, not arithmetic, is what a sampler pays at batch 1.
"""
from dataclasses import dataclass

import torch

from .generator import CheckerboardGenerator, Layout


@dataclass
class GenerationOutput:
    images: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    tokens: list  # per scale (B, s, s) code indices
    labels: torch.Tensor | None  # (B,) the classes sampled for, None if unconditional
    steps: list | None = None  # per scale (B, s, s): the step at which each cell was sampled
    entropy: list | None = None  # per scale (B, s, s): entropy of the distribution it was drawn from


def exponential_noise(shape, device, generator):
    """Exp(1) noise (B, ...); a list of generators gives each sample its own stream, so a sample's
    draws depend on its own seed only (not on the batch it is in)."""
    out = torch.empty(shape, device=device)
    if isinstance(generator, (list, tuple)):
        for row, g in zip(out, generator):
            row.exponential_(generator=g)
        return out
    return out.exponential_(generator=generator)


def block_step(model: CheckerboardGenerator, tokens, src, seq_gt, modulations, guided: bool, cfg_weight, noise,
               temperature: float, layout: Layout, with_entropy: bool):
    """One block: inputs, transformer pass over the block with the KV cache, guided logits, draw.

    tokens (n,) sequence indices of the block; src (B, n, C) its embedded sources; seq_gt
    (B, N, C) embedded codes sampled so far. Returns indices (B, n), their embedded codes
    (B, n, C) and the entropy of each draw (B, n) or None.
    """
    x = model.token_inputs(layout.pos_id[tokens], layout.prev_pos_id[tokens], layout.has_prev[tokens], src,
                           seq_gt[:, layout.prev_index[tokens]])  # (B, n, C)
    if guided:
        x = torch.cat([x, x])  # conditional and "no class" halves in one batch
    pos = tokens + layout.n_cls
    h = model.llama(x, modulations, layout.rot_pos[pos], layout.rot_prev[pos], layout.mask[pos], pos)
    logits = model.lm_head(h).float()  # (rows, n, V)
    if guided:
        cond, uncond = logits.chunk(2)
        logits = cond + cfg_weight * (cond - uncond)  # weight 0 before cfg_start_step: exactly cond
    if temperature == 0:
        idx = logits.argmax(-1)
    else:
        probs = torch.softmax(logits / temperature, dim=-1)
        idx = (probs / noise).argmax(-1)  # the exponential race: a draw without a host sync
    entropy = None
    if with_entropy:
        logp = torch.log_softmax(logits, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
    gt = model.embed_codevecs_mlp(model.autoenc.codebook()[idx])
    return idx, gt, entropy


def scale_sources(model: CheckerboardGenerator, seq_idx, layout: Layout, k: int):
    """Embedded sources (B, n_k, C) of scale k: the finished scale k-1 rescaled to it (SPEC 4)."""
    s = model.scale_sizes[k]
    B = seq_idx.shape[0]
    if k == 0:
        book = model.autoenc.codebook()
        z_up = torch.zeros(B, book.shape[1], s, s, dtype=book.dtype, device=seq_idx.device)
    else:
        previous = model.autoenc.lookup(_to_grid(seq_idx, layout, k - 1, model.scale_sizes[k - 1]))
        z_up = model.autoenc.rescale_latents(previous, s)  # (B, 8, s, s)
    lo, hi = layout.scale_bounds[k]
    return model.embed_sources(z_up.flatten(2)[:, :, layout.cell[lo:hi]].transpose(1, 2))  # (B, n_k, C)


def decode_tokens(model: CheckerboardGenerator, seq_idx, layout: Layout):
    """RGB images (B, 3, H, W) from the tokens of the last scale."""
    k = len(model.scale_sizes) - 1
    return model.autoenc.decode(model.autoenc.lookup(_to_grid(seq_idx, layout, k, model.scale_sizes[k])))


def class_prefill(model: CheckerboardGenerator, cond, modulations, layout: Layout):
    """Writes the class token's keys and values into the cache."""
    pos = torch.zeros(1, dtype=torch.long, device=cond.device)
    model.llama(cond[:, None], modulations, layout.rot_pos[pos], layout.rot_prev[pos], layout.mask[pos], pos)


_compiled: dict = {}


def _maybe_compiled(fn, compile: bool):
    """Static shapes: one specialisation per block size, scale and batch shape, so the default
    limit of 8 is too low for a sampler that mixes settings."""
    if not compile:
        return fn
    if fn not in _compiled:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        _compiled[fn] = torch.compile(fn, fullgraph=True, dynamic=False)
    return _compiled[fn]


def resolve_labels(model: CheckerboardGenerator, labels, batch_size, generator, device):
    """(labels or None, batch size): random classes when a conditional model gets none."""
    if model.cfg.class_cond and labels is None:
        if batch_size is None:
            raise ValueError("pass labels or batch_size")
        g = generator[0] if isinstance(generator, (list, tuple)) else generator
        labels = torch.randint(0, model.cfg.num_classes, (batch_size,), generator=g,
                               device=g.device if g is not None else "cpu")
    if labels is not None:
        labels = torch.as_tensor(labels).to(device=device, dtype=torch.long)
        model.check_labels(labels)
        return labels, labels.shape[0]
    model.check_labels(None)
    if batch_size is None:
        raise ValueError("an unconditional model needs batch_size")
    return None, batch_size


def run_blocks(model: CheckerboardGenerator, B: int, labels, cfg_weights, noise, layout: Layout, guided: bool,
               temperature: float, with_entropy: bool, compile: bool):
    """All steps and the decoder, on the device only: no host sync, no host data, so that it
    can be captured as one CUDA graph. labels (B,) or None; cfg_weights (steps,) the guidance
    weight of each step; noise (B, N, V) Exp(1) draws or None at temperature 0.
    Returns indices (B, N) in sequence order, entropies (B, N) or None, and images."""
    device = layout.cell.device
    N, C = len(layout.cell), model.combine_inputs.out_features
    step_fn = _maybe_compiled(block_step, compile)
    modulations = None
    if layout.n_cls:
        rows = torch.cat([labels, torch.full_like(labels, model.cfg.num_classes)]) if guided else labels
        cond = model.class_embeddings(rows)  # (rows, C)
        modulations = model.llama.modulations(cond)
        _maybe_compiled(class_prefill, compile)(model, cond, modulations, layout)
    seq_idx = torch.zeros(B, N, dtype=torch.long, device=device)
    seq_gt = torch.zeros(B, N, C, dtype=model.lm_head.weight.dtype, device=device)
    seq_entropy = torch.zeros(B, N, device=device) if with_entropy else None
    sources_fn = _maybe_compiled(scale_sources, compile)
    for step, ((lo, hi), tokens) in enumerate(zip(layout.block_bounds, layout.block_tokens)):
        k = next(i for i, (s_lo, s_hi) in enumerate(layout.scale_bounds) if s_lo <= lo < s_hi)
        if lo == layout.scale_bounds[k][0]:
            src, s_lo = sources_fn(model, seq_idx, layout, k), lo
        block_src = src[:, lo - s_lo:hi - s_lo].contiguous()  # same strides for every block size
        block_noise = None if noise is None else noise[:, lo:hi]
        idx, gt, entropy = step_fn(model, tokens, block_src, seq_gt, modulations, guided, cfg_weights[step],
                                   block_noise, temperature, layout, with_entropy)
        seq_idx[:, lo:hi] = idx
        seq_gt[:, lo:hi] = gt
        if with_entropy:
            seq_entropy[:, lo:hi] = entropy
    return seq_idx, seq_entropy, _maybe_compiled(decode_tokens, compile)(model, seq_idx, layout)


class GraphedGeneration:
    """`run_blocks` captured once as a CUDA graph for one batch shape and set of options.

    Labels, guidance weights and noise are copied into static buffers before each replay; the
    graph owns its KV caches, so another batch shape (which allocates new caches) cannot pull
    memory from under it."""

    def __init__(self, model, B, labels, cfg_weights, noise, layout, guided, temperature, with_entropy):
        self.labels = None if labels is None else labels.clone()
        self.cfg_weights = cfg_weights.clone()
        self.noise = None if noise is None else noise.clone()
        args = (model, B, self.labels, self.cfg_weights, self.noise, layout, guided, temperature, with_entropy, True)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up compiles and autotunes outside the capture
            for _ in range(2):
                run_blocks(*args)
        torch.cuda.current_stream().wait_stream(stream)
        self.caches = [(layer.attention.kv_cache.k, layer.attention.kv_cache.v) for layer in model.llama.layers]
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = run_blocks(*args)

    def __call__(self, labels, cfg_weights, noise):
        if labels is not None:
            self.labels.copy_(labels)
        self.cfg_weights.copy_(cfg_weights)
        if noise is not None:
            self.noise.copy_(noise)
        self.graph.replay()
        return tuple(None if t is None else t.clone() for t in self.outputs)


@torch.no_grad()
def generate(model: CheckerboardGenerator, labels=None, batch_size=None, cfg=0.0, cfg_start_step=5,
             steps_per_scale=4, temperature=1.0, generator=None, return_trace=False,
             compile=False) -> GenerationOutput:
    if cfg < 0:
        raise ValueError(f"cfg must be >= 0, got {cfg}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if cfg > 0 and not model.cfg.class_cond:
        raise ValueError(f"cfg={cfg} needs a class-conditional model; this one is unconditional (use cfg 0)")
    if isinstance(generator, (list, tuple)) and batch_size is None and labels is None:
        batch_size = len(generator)
    device, dtype = model.lm_head.weight.device, model.lm_head.weight.dtype
    labels, B = resolve_labels(model, labels, batch_size, generator, device)
    layout = model.layout(steps_per_scale, device)
    N = len(layout.cell)
    guided = cfg > 0
    model.llama.setup_caches(2 * B if guided else B, layout.n_cls + N, dtype, device)
    cfg_weights = torch.tensor([cfg if guided and t >= cfg_start_step else 0.0
                                for t in range(len(layout.block_bounds))]).to(device)
    noise = None
    if temperature > 0:
        noise = exponential_noise((B, N, model.autoenc.config.n_embed), device, generator)

    if compile and device.type == "cuda":
        key = (B, layout.block_bounds, guided, float(temperature), return_trace, dtype)
        graphs = model._generation_graphs
        if key not in graphs:
            graphs[key] = GraphedGeneration(model, B, labels, cfg_weights, noise, layout, guided, temperature,
                                            return_trace)
        seq_idx, seq_entropy, images = graphs[key](labels, cfg_weights, noise)
    else:
        seq_idx, seq_entropy, images = run_blocks(model, B, labels, cfg_weights, noise, layout, guided, temperature,
                                                  return_trace, compile)

    out = GenerationOutput(images=images, labels=labels,
                           tokens=[_to_grid(seq_idx, layout, k, s) for k, s in enumerate(model.scale_sizes)])
    if return_trace:
        steps = layout.block.expand(B, -1)
        out.steps = [_to_grid(steps, layout, k, s) for k, s in enumerate(model.scale_sizes)]
        out.entropy = [_to_grid(seq_entropy, layout, k, s) for k, s in enumerate(model.scale_sizes)]
    return out


def _to_grid(seq, layout: Layout, k: int, s: int):
    """Per-token values of scale k in scan order -> (B, s, s) grid."""
    lo, hi = layout.scale_bounds[k]
    grid = seq.new_empty(seq.shape[0], s * s)
    grid[:, layout.cell[lo:hi]] = seq[:, lo:hi]
    return grid.view(-1, s, s)
