"""Blockwise-causal Llama transformer with class AdaLN and a learned rotary table (docs/method.md
section 5). It holds no generation state: a sampler hands it the key/value buffers to write."""
import inspect
import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts


def _kept_ops() -> list:
    """What selective checkpointing keeps of a block: the outputs of matrix products and of
    attention, whose recomputation would cost real arithmetic. Everything else in a block (norms,
    AdaLN, rotary, SiLU, residual adds, dtype casts) is elementwise and recomputed in the backward
    pass, which roughly halves the activation memory of a training step."""
    aten = torch.ops.aten
    names = ["mm", "addmm", "bmm", "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
             "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu"]
    return [getattr(aten, name).default for name in names if hasattr(aten, name)]


_selective_checkpoint = partial(create_selective_checkpoint_contexts, _kept_ops())
# Newer torch releases route the tensors kept by selective checkpointing through active
# saved-tensor hooks only when asked; benchmarks/activation_memory.py counts them with such a hook.
_CHECKPOINT_HOOKS = {"respect_saved_tensors_hooks": True} \
    if "respect_saved_tensors_hooks" in inspect.signature(checkpoint).parameters else {}


FFN_MULTIPLE = 256  # the SwiGLU width is rounded up to a multiple of this (Llama's `multiple_of`)


@dataclass
class TransformerConfig:
    dim: int
    n_layers: int
    n_heads: int
    intermediate_size: int | None  # None: Llama's default width, 8/3 of dim
    num_mixing_layers: int  # the first layers mix each key's rotary row with that of its t'
    class_cond: bool
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        # The published model reaches intermediate_size through a float multiplier of Llama's
        # default width; the same arithmetic gives the same width for every value.
        default = int(2 * 4 * self.dim / 3)
        width = default if self.intermediate_size is None else int(self.intermediate_size / default * default)
        return -(-width // FFN_MULTIPLE) * FFN_MULTIPLE


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class AdaLN(nn.Module):
    """x * scale + shift from the sample's class embedding."""

    def __init__(self, dim: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, cond):
        """(B, 1, 2C) shift and scale; depends on the class only, so sampling computes it once."""
        return self.adaLN_modulation(cond).unsqueeze(1)

    @staticmethod
    def modulate(x, modulation):
        shift, scale = modulation.chunk(2, dim=-1)  # (B, 1, C) each
        return x * scale + shift


def apply_rotary(x, rot):
    """x (B, H, L, d); rot (..., L, d, 2) holding (cos, sin) per dimension."""
    cos, sin = rot.unbind(-1)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.wqkv = nn.Linear(config.dim, 3 * config.dim, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)

    def forward(self, x, rot_q, rot_k, mask, cache=None, input_pos=None):
        """cache: (keys, values) buffers (B, H, max_len, d) owned by the caller; this pass writes its
        keys and values at `input_pos` (L,) in place and attends over the whole buffers."""
        B, L, C = x.shape
        q, k, v = self.wqkv(x).view(B, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, H, L, d)
        q, k = apply_rotary(q, rot_q), apply_rotary(k, rot_k)
        if cache is not None:
            keys, values = cache
            keys.index_copy_(2, input_pos, k)
            values.index_copy_(2, input_pos, v)
            k, v = keys, values  # (B, H, max_len, d)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, d)
        return self.wo(y.transpose(1, 2).reshape(B, L, C))


class FeedForward(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.ffn_hidden, bias=False)
        self.w3 = nn.Linear(config.dim, config.ffn_hidden, bias=False)
        self.w2 = nn.Linear(config.ffn_hidden, config.dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        if config.class_cond:
            self.input_modulation = AdaLN(config.dim)
            self.post_attention_modulation = AdaLN(config.dim)

    def modulations(self, cond):
        return self.input_modulation(cond), self.post_attention_modulation(cond)

    def forward(self, x, modulations, rot_q, rot_k, mask, cache=None, input_pos=None):
        h = self.attention_norm(x)
        if modulations is not None:
            h = AdaLN.modulate(h, modulations[0])
        x = x + self.attention(h, rot_q, rot_k, mask, cache, input_pos)
        h = self.ffn_norm(x)
        if modulations is not None:
            h = AdaLN.modulate(h, modulations[1])
        return x + self.feed_forward(h)


class UnitComplex(nn.Module):
    """Renormalises each stored (re, im) pair to modulus 1."""

    def forward(self, w):
        pairs = w.view(*w.shape[:-1], -1, 2)
        return (pairs / pairs.norm(dim=-1, keepdim=True)).view_as(w)


def init_rotary_table(scale_sizes: list[int], head_dim: int) -> torch.Tensor:
    """(sum s^2 + 2, head_dim, 2) unit complex numbers: every cell of every scale, then class, empty.

    Computed in float32 by the published model's sequence of operations, the complex exponential
    included, so that a model trained from scratch starts from its table bit for bit."""
    d = head_dim
    f = d - d // 8
    f += f % 2
    largest = scale_sizes[-1]
    freqs = 1.0 / ((largest**2) ** (torch.arange(0, f, 2).float() / f))  # (f/2,)
    scale_freqs = (math.pi / 2) / (10.0 ** (torch.arange(d - f) / (d - f)))  # (d-f,)
    rows = []
    for index, s in enumerate(scale_sizes):
        stride = largest / s
        cell = torch.arange(s * s, dtype=torch.int32)[:, None]  # (s*s, 1), row-major
        angles = torch.cat([(stride * (cell % s) + 1) * freqs, (stride * (cell // s) + 1) * freqs], dim=1)
        spatial = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (s*s, f, 2)
        scale = torch.view_as_real(torch.exp(1.0j * scale_freqs * (index + 1)))  # (d-f, 2)
        rows.append(torch.cat([spatial, scale.expand(s * s, -1, -1)], dim=1))
    rows.append(torch.stack([torch.ones(2, d), torch.zeros(2, d)], dim=-1))  # class and empty: angle 0
    return torch.cat(rows)


class RotaryTable(nn.Module):
    def __init__(self, config: TransformerConfig, scale_sizes: list[int]):
        super().__init__()
        table = init_rotary_table(scale_sizes, config.head_dim)
        self.position_embeddings = nn.Embedding(table.shape[0], 2 * config.head_dim)
        with torch.no_grad():
            self.position_embeddings.weight.copy_(table.flatten(1))
        parametrize.register_parametrization(self.position_embeddings, "weight", UnitComplex())
        self.mixing_coeffs = nn.Parameter(torch.zeros(config.num_mixing_layers, config.n_heads))

    def forward(self, pos_ids, prev_ids):
        """Query rows (L, d, 2) and, per mixing layer, the mixed key rows (H, L, d, 2)."""
        table = self.position_embeddings.weight
        rq = table[pos_ids].unflatten(-1, (-1, 2))  # (L, d, 2)
        rp = table[prev_ids].unflatten(-1, (-1, 2))
        a = torch.sigmoid(self.mixing_coeffs)[:, :, None, None, None]  # (M, H, 1, 1, 1)
        rk = a * rq + (1 - a) * rp  # (M, H, L, d, 2)
        return rq, rk.unbind(0)


def _init_weights(module: nn.Module, std: float):
    """The published transformer's initialisation, applied module by module in `nn.Module.apply`'s
    order (docs/method.md section 5): every linear weight normal with `std` and its bias zero. It
    runs after the layers' own initialisations and overwrites them: the AdaLN maps start random
    (weight normal, shift and scale biases 0), not as the identity their published module sets."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        # The rotary table, the one embedding here. The published code fills its weight with normal
        # values, but that weight is computed by the table's parametrisation: the values land in a
        # copy that is thrown away and the table keeps its angles. The draw still advances the random
        # stream, which the weights built after it depend on.
        torch.empty_like(module.weight).normal_(std=std)


class Transformer(nn.Module):
    def __init__(self, config: TransformerConfig, scale_sizes: list[int]):
        super().__init__()
        self.config = config
        # Built first, registered last: the published model builds its rotary table before the blocks
        # (which fixes where the initial weights fall in the random stream) and registers it after
        # them (which fixes the order of the parameters, and so of a checkpoint's optimizer state).
        rotary_emb = RotaryTable(config, scale_sizes)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.rotary_emb = rotary_emb
        self.grad_checkpointing = False  # selective activation checkpointing of every block in training
        self.apply(partial(_init_weights, std=0.02))

    def modulations(self, cond):
        """Per layer, the AdaLN shift/scale pairs of a class embedding (B, C); None if unconditional."""
        return None if cond is None else [layer.modulations(cond) for layer in self.layers]

    def forward(self, x, modulations, pos_ids, prev_ids, mask, caches=None, input_pos=None):
        """x (B, L, C); modulations from `modulations(cond)`; pos_ids/prev_ids (L,) rotary rows;
        mask (L, S) bool; caches: per layer (keys, values) buffers of S slots, written at
        input_pos (L,), or None to attend within x only."""
        rot_q, rot_k_mixed = self.rotary_emb(pos_ids, prev_ids)
        for i, layer in enumerate(self.layers):
            args = (x, None if modulations is None else modulations[i], rot_q,
                    rot_k_mixed[i] if i < len(rot_k_mixed) else rot_q, mask,
                    None if caches is None else caches[i], input_pos)
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, *args, use_reentrant=False, context_fn=_selective_checkpoint,
                               **_CHECKPOINT_HOOKS)
            else:
                x = layer(*args)
        return self.norm(x)  # (B, L, C)
