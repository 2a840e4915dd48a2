"""Block-by-block sampling with a static KV cache (SPEC 7)."""
from dataclasses import dataclass

import torch

from .generator import CheckerboardGenerator, _to_device


@dataclass
class GenerationOutput:
    images: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    tokens: list  # per scale (B, s, s) code indices
    labels: torch.Tensor | None  # (B,) the classes sampled for, None if unconditional
    steps: list | None = None  # per scale (B, s, s): the step at which each cell was sampled
    entropy: list | None = None  # per scale (B, s, s): entropy of the distribution it was drawn from


def sample_from_logits(logits, temperature: float, noise=None):
    """Argmax at temperature 0, otherwise a draw by the exponential-race trick (no host sync)."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return (probs / noise).argmax(-1)


def exponential_noise(shape, device, generator):
    """Exp(1) noise; a list of generators gives each sample its own stream (reproducible per index)."""
    if isinstance(generator, (list, tuple)):
        return torch.stack([torch.empty(shape[1:], device=device).exponential_(generator=g) for g in generator])
    return torch.empty(shape, device=device).exponential_(generator=generator)


def entropy_of(logits):
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def generate(model: CheckerboardGenerator, labels=None, batch_size=None, cfg=0.0, cfg_start_step=5,
             steps_per_scale=4, temperature=1.0, generator=None, return_trace=False) -> GenerationOutput:
    mcfg = model.cfg
    device = model.lm_head.weight.device
    if cfg < 0:
        raise ValueError(f"cfg must be >= 0, got {cfg}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    guided = cfg > 0
    if guided and not mcfg.class_cond:
        raise ValueError(f"cfg={cfg} needs a class-conditional model; this one is unconditional (use cfg 0)")
    if isinstance(generator, (list, tuple)):
        batch_size = batch_size or len(generator)
    if mcfg.class_cond and labels is None:
        if batch_size is None:
            raise ValueError("pass labels or batch_size")
        g = generator[0] if isinstance(generator, (list, tuple)) else generator
        labels = torch.randint(0, mcfg.num_classes, (batch_size,), generator=g,
                               device=g.device if g is not None else "cpu")
    if labels is not None:
        labels = torch.as_tensor(labels, device=device).long()
        model.check_labels(labels)
        B = labels.shape[0]
    else:
        model.check_labels(None)
        if batch_size is None:
            raise ValueError("an unconditional model needs batch_size")
        B = batch_size

    layout = _to_device(model.layout(steps_per_scale), device)
    N = len(layout.cell)
    n_cls = 1 if mcfg.class_cond else 0
    rows = 2 * B if guided else B
    dtype = model.lm_head.weight.dtype
    model.llama.setup_caches(rows, N + n_cls, dtype, device)
    try:
        block = layout.block + n_cls
        if n_cls:
            block = torch.cat([block.new_zeros(1), block])
        full_mask = block[None, :] <= block[:, None]  # (L, L)
        pos_ids, prev_ids = model.rotary_ids(layout)
        if n_cls:
            cls = torch.tensor([model.class_pos_id], device=device)
            pos_ids, prev_ids = torch.cat([cls, pos_ids]), torch.cat([cls, prev_ids])

        cond = None
        if n_cls:
            cond_labels = torch.cat([labels, torch.full_like(labels, mcfg.num_classes)]) if guided else labels
            cond = model.class_embeddings(cond_labels)  # (rows, C)
            model.llama(cond[:, None], cond, pos_ids[:1], prev_ids[:1], full_mask[:1],
                        torch.zeros(1, dtype=torch.long, device=device))

        book = model.autoenc.codebook()  # (V, 8)
        seq_idx = torch.zeros(B, N, dtype=torch.long, device=device)
        seq_gt = torch.zeros(B, N, model.combine_inputs.out_features, dtype=dtype, device=device)
        seq_entropy = torch.zeros(B, N, device=device) if return_trace else None
        has_prev = layout.prev >= 0
        step = 0
        scale_codes = []
        for k, (s_lo, s_hi) in enumerate(layout.scale_bounds):
            s = model.scale_sizes[k]
            if k == 0:
                z_up = torch.zeros(B, book.shape[1], s, s, dtype=dtype, device=device)
            else:
                z_up = model.autoenc.rescale_latents(scale_codes[-1], s)  # (B, 8, s, s)
            src = model.embed_sources(z_up.flatten(2)[:, :, layout.cell[s_lo:s_hi]].transpose(1, 2))
            for lo, hi in (b for b in layout.block_bounds if s_lo <= b[0] < s_hi):
                prev = layout.prev[lo:hi].clamp(min=0)
                x = model.token_inputs(layout, lo, hi, src[:, lo - s_lo:hi - s_lo], seq_gt[:, prev],
                                       has_prev[lo:hi])  # (B, n, C)
                if guided:
                    x = torch.cat([x, x])
                pos = torch.arange(lo + n_cls, hi + n_cls, device=device)
                h = model.llama(x, cond, pos_ids[pos], prev_ids[pos], full_mask[pos], pos)
                logits = model.lm_head(h).float()  # (rows, n, V)
                if guided:
                    cond_logits, uncond_logits = logits.chunk(2)
                    logits = cond_logits + cfg * (cond_logits - uncond_logits) if step >= cfg_start_step else cond_logits
                noise = None if temperature == 0 else exponential_noise(logits.shape, device, generator)
                idx = sample_from_logits(logits, temperature, noise)  # (B, n)
                seq_idx[:, lo:hi] = idx
                seq_gt[:, lo:hi] = model.embed_codevecs_mlp(book[idx])
                if return_trace:
                    seq_entropy[:, lo:hi] = entropy_of(logits)
                step += 1
            grid = torch.empty(B, s * s, dtype=torch.long, device=device)
            grid[:, layout.cell[s_lo:s_hi]] = seq_idx[:, s_lo:s_hi]
            scale_codes.append(model.autoenc.lookup(grid.view(B, s, s)))
    finally:
        model.llama.clear_caches()

    images = model.autoenc.decode(scale_codes[-1])
    tokens = [_to_grid(seq_idx, layout, k, s) for k, s in enumerate(model.scale_sizes)]
    out = GenerationOutput(images=images, tokens=tokens, labels=labels)
    if return_trace:
        steps = layout.block.expand(B, -1)
        out.steps = [_to_grid(steps, layout, k, s) for k, s in enumerate(model.scale_sizes)]
        out.entropy = [_to_grid(seq_entropy, layout, k, s) for k, s in enumerate(model.scale_sizes)]
    return out


def _to_grid(seq, layout, k, s):
    """Per-token values of scale k in scan order -> (B, s, s) grid."""
    lo, hi = layout.scale_bounds[k]
    grid = seq.new_empty(seq.shape[0], s * s)
    grid[:, layout.cell[lo:hi]] = seq[:, lo:hi]
    return grid.view(-1, s, s)
