"""The progressive checkerboard generator: inputs (SPEC 4), teacher-forced loss (SPEC 6)."""
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .autoencoder import VQModel
from .checkerboard import checkerboard_order, scale_ratio_from_config, scale_sizes
from .transformer import Transformer, TransformerConfig


DEFAULT_STEPS_PER_SCALE = 4


@dataclass
class LlamaConfig:
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_hidden_layers: int


@dataclass
class AutoencSection:
    config_path: str
    checkpoint_path: str | None = None
    params: dict = field(default_factory=dict)


@dataclass
class GeneratorConfig:
    """The `model:` section of a config file (published key names)."""

    img_size: int
    llama_config: LlamaConfig
    autoenc: AutoencSection
    num_classes: int = 1000
    class_cond: bool = True
    num_mixing_layers: int = 2
    scale_ratio: float = 2.0
    scale_min_size: int = 1
    random_block_size: bool = True
    random_replace: float = 0.1
    random_replace_sampled: bool = False
    use_head_mlp: bool = False
    label_drop_prob: float = 0.1

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "GeneratorConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) in model section: {', '.join(unknown)}")
        missing = [k for k in ("img_size", "llama_config", "autoenc") if k not in d]
        if missing:
            raise ValueError(f"{source}: model section is missing {', '.join(missing)}")
        d = dict(d)
        try:
            d["llama_config"] = LlamaConfig(**d["llama_config"])
            d["autoenc"] = AutoencSection(**d["autoenc"])
        except TypeError as e:
            raise ValueError(f"{source}: {e}") from None
        d["scale_ratio"] = scale_ratio_from_config(d.get("scale_ratio", 2.0))
        cfg = cls(**d)
        if cfg.use_head_mlp:
            raise ValueError(f"{source}: use_head_mlp: true is not supported (the published models use false)")
        if cfg.random_replace_sampled:
            raise ValueError(f"{source}: random_replace_sampled: true is not supported (the published models use false)")
        return cfg

    def transformer_config(self) -> TransformerConfig:
        lc = self.llama_config
        return TransformerConfig(lc.hidden_size, lc.num_hidden_layers, lc.num_attention_heads,
                                 lc.intermediate_size, self.num_mixing_layers, self.class_cond)


@dataclass(frozen=True)
class Layout:
    """Where each token of the sequence sits and which token it reads, as device tensors.

    Tokens run scale by scale, smallest first, each scale in checkerboard order; N tokens,
    plus the class token in front (n_cls = 1) for a class-conditional model: L = n_cls + N.
    """

    cell: torch.Tensor  # (N,) flat index y*s+x inside its scale
    pos_id: torch.Tensor  # (N,) row of the shared position table
    prev_index: torch.Tensor  # (N,) sequence index of t' (0 where it is "empty")
    prev_pos_id: torch.Tensor  # (N,) position row of t' (0 where it is "empty")
    has_prev: torch.Tensor  # (N,) bool: t' exists (not "empty")
    block: torch.Tensor  # (N,) block index counted from 0 over all scales
    rot_pos: torch.Tensor  # (L,) rotary row of each token, class token included
    rot_prev: torch.Tensor  # (L,) rotary row of its t' (class id for the class token, else empty id)
    mask: torch.Tensor  # (L, L) bool: a token sees its own block and all earlier ones
    n_cls: int
    scale_bounds: tuple  # ((start, end), ...) per scale, in token indices (class token excluded)
    block_bounds: tuple  # ((start, end), ...) per block, likewise
    block_tokens: tuple  # per block, its token indices (n,) on the device (built once, not per step)


def build_layout(sizes: tuple, blocks: tuple, n_cls: int, class_id: int, empty_id: int, device) -> Layout:
    """blocks: per scale (block, merge_remainder); a merged remainder reads "empty" as its t'."""
    cell, pos_id, prev, block_ids, scale_bounds, block_bounds = [], [], [], [], [], []
    offset = 0
    for s, (block, merge) in zip(sizes, blocks):
        n = s * s
        start = len(cell)
        cell += checkerboard_order(s).tolist()
        pos_id += [offset + c for c in cell[start:]]
        full = n // block
        edges = list(range(0, full * block + 1, block))
        if n % block:
            if merge and full >= 1:
                edges[-1] = n
            else:
                edges.append(n)
        for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            block_bounds.append((start + lo, start + hi))
            for r in range(lo, hi):
                block_ids.append(len(block_bounds) - 1)
                reads_empty = b == 0 or r - lo >= block
                prev.append(-1 if reads_empty else start + r - block)
        scale_bounds.append((start, start + n))
        offset += n
    prev = torch.tensor(prev)
    pos_id = torch.tensor(pos_id)
    has_prev = prev >= 0
    prev_index = prev.clamp(min=0)
    prev_pos_id = torch.where(has_prev, pos_id[prev_index], 0)
    block = torch.tensor(block_ids)
    head = torch.tensor([class_id] * n_cls, dtype=torch.long)
    rot_pos = torch.cat([head, pos_id])
    rot_prev = torch.cat([head, torch.where(has_prev, prev_pos_id, empty_id)])
    seq_block = torch.cat([torch.zeros(n_cls, dtype=torch.long), block + n_cls])
    mask = seq_block[None, :] <= seq_block[:, None]
    to = lambda t: t.to(device)  # noqa: E731
    block_tokens = tuple(to(torch.arange(lo, hi)) for lo, hi in block_bounds)
    return Layout(to(torch.tensor(cell)), to(pos_id), to(prev_index), to(prev_pos_id), to(has_prev), to(block),
                  to(rot_pos), to(rot_prev), to(mask), n_cls, tuple(scale_bounds), tuple(block_bounds), block_tokens)


def random_block(n: int, rng: random.Random) -> int:
    """SPEC 6: x in 1..floor(sqrt n), then x or n // x with equal odds, never sqrt(n) twice."""
    m = int(np.floor(np.sqrt(n)))
    while True:
        x = rng.randint(1, m)
        if rng.random() < 0.5:
            return x
        if x == m and n % m == 0:
            continue
        return n // x


class CodeVectorMLP(nn.Module):
    def __init__(self, embed_dim: int, dim: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim))

    def forward(self, x):
        return self.net(x)


class CheckerboardGenerator(nn.Module):
    def __init__(self, cfg: GeneratorConfig, autoencoder: VQModel):
        super().__init__()
        self.cfg = cfg
        tcfg = cfg.transformer_config()
        C = tcfg.dim
        if cfg.img_size % autoencoder.stride:
            raise ValueError(f"img_size {cfg.img_size} is not a multiple of the autoencoder stride {autoencoder.stride}")
        self.scale_sizes = scale_sizes(cfg.img_size // autoencoder.stride, cfg.scale_ratio, cfg.scale_min_size)
        self.num_tokens = sum(s * s for s in self.scale_sizes)
        # Extra rotary rows after the grid cells.
        self.class_pos_id, self.empty_pos_id = self.num_tokens, self.num_tokens + 1

        self.empty_token_emb = nn.Parameter(torch.empty(C))
        self.empty_token_pos = nn.Parameter(torch.empty(C))
        self.autoenc = autoencoder
        self.autoenc.scale_sizes = self.scale_sizes
        self.autoenc.requires_grad_(False)
        self.llama = Transformer(tcfg, self.scale_sizes)
        if cfg.class_cond:
            self.class_embeddings = nn.Embedding(cfg.num_classes + 1, C)  # last row: "no class"
        self.embed_positions = nn.Embedding(self.num_tokens, C)
        self.embed_codevecs_mlp = CodeVectorMLP(autoencoder.config.embed_dim, C)
        self.src_latents_proj = nn.Linear(C, C)
        self.combine_inputs = nn.Linear(4 * C, C)
        self.lm_head = nn.Linear(C, autoencoder.config.n_embed)
        self._block_rng = random.Random(0)
        self._layouts = {}
        self._generation_graphs = {}  # sampler.GraphedGeneration per batch shape and options
        self._init_weights()

    def _init_weights(self, std: float = 0.02):
        """LlamaGen's initialisation (normal weights, zero biases) for training from scratch; the
        AdaLN layers start as the identity and the rotary table keeps its SPEC 5 angles."""
        for name, module in self.named_modules():
            if name.startswith(("autoenc", "llama.rotary_emb")):
                continue
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.empty_token_emb, std=std)
        nn.init.normal_(self.empty_token_pos, std=std)
        if self.cfg.class_cond:
            for layer in self.llama.layers:
                layer.input_modulation.reset_parameters()
                layer.post_attention_modulation.reset_parameters()

    @property
    def autoencoder(self) -> VQModel:
        return self.autoenc

    def train(self, mode: bool = True):
        super().train(mode)
        self.autoenc.eval()  # frozen: its layers never switch to training behaviour
        return self

    def seed_block_sizes(self, seed: int):
        """The random block sizes of training come from a host RNG; seed it for exact resumes."""
        self._block_rng.seed(seed)

    # ---- layouts -------------------------------------------------------------------------
    def steps_per_scale_list(self, steps_per_scale) -> tuple:
        if isinstance(steps_per_scale, int):
            return (steps_per_scale,) * len(self.scale_sizes)
        steps = tuple(int(p) for p in steps_per_scale)
        if len(steps) != len(self.scale_sizes):
            raise ValueError(f"steps_per_scale has {len(steps)} entries but the model has "
                             f"{len(self.scale_sizes)} scales {self.scale_sizes}")
        if min(steps) < 1:
            raise ValueError(f"steps_per_scale entries must be >= 1, got {list(steps)}")
        return steps

    def layout(self, steps_per_scale=4, device=None) -> Layout:
        steps = self.steps_per_scale_list(steps_per_scale)
        return self._layout(tuple((max(1, s * s // p), False) for s, p in zip(self.scale_sizes, steps)), device)

    def random_layout(self, device=None) -> Layout:
        rng = self._block_rng
        return self._layout(tuple((random_block(s * s, rng), rng.random() < 0.5) for s in self.scale_sizes), device)

    def _layout(self, blocks: tuple, device) -> Layout:
        """Layouts are cached per block split and device: training draws from a small set of
        splits, and rebuilding or copying one every step would cost host time and H2D copies."""
        device = torch.device(device or self.lm_head.weight.device)
        key = (blocks, str(device))
        if key not in self._layouts:
            n_cls = 1 if self.cfg.class_cond else 0
            self._layouts[key] = build_layout(tuple(self.scale_sizes), blocks, n_cls, self.class_pos_id,
                                              self.empty_pos_id, device)
        return self._layouts[key]

    # ---- inputs --------------------------------------------------------------------------
    def check_labels(self, labels):
        if not self.cfg.class_cond:
            if labels is not None:
                raise ValueError("this model is unconditional: pass labels=None")
            return
        if labels is None:
            raise ValueError("this model is class-conditional: labels are required")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.cfg.num_classes):
            raise ValueError(f"labels must be in 0..{self.cfg.num_classes - 1}, got "
                             f"{sorted(set(labels.tolist()))[:5]}...")

    def embed_sources(self, z_up):
        """z_up (B, n, 8) code vectors of the previous scale rescaled to this one -> (B, n, C)."""
        return self.src_latents_proj(self.embed_codevecs_mlp(z_up))

    def token_inputs(self, pos_id, prev_pos_id, has_prev, src, gt_prev):
        """Input vectors (B, n, C) of n tokens: their position rows (n,), their t' position rows
        (n,) and whether t' exists (n,), the embedded sources (B, n, C) and embedded codes of t'
        (B, n, C); where t' is "empty" the learned empty vectors stand in."""
        pos_table = self.embed_positions.weight
        has = has_prev[:, None]
        pos_prev = torch.where(has, pos_table[prev_pos_id], self.empty_token_pos)  # (n, C)
        gt_prev = torch.where(has, gt_prev, self.empty_token_emb)
        B = src.shape[0]
        x = torch.cat([pos_table[pos_id].expand(B, -1, -1), src, pos_prev.expand(B, -1, -1), gt_prev], dim=-1)
        return self.combine_inputs(x)  # (B, n, C)

    def upsampled_sources(self, codes: list) -> list:
        """Per scale, the previous scale's code vectors rescaled to it (B, 8, s, s); the first
        scale has no previous one and reads zero vectors (still embedded and projected, as the
        published implementation does)."""
        first = torch.zeros_like(codes[0])
        return [first] + [self.autoenc.rescale_latents(z, s) for z, s in zip(codes[:-1], self.scale_sizes[1:])]

    # ---- teacher forcing -----------------------------------------------------------------
    def training_layout(self, device=None) -> Layout:
        """The layout of one training step: random block sizes when the config asks for them,
        else the split of the paper's ratio-2 sampling setting."""
        return self.random_layout(device) if self.cfg.random_block_size else \
            self.layout(DEFAULT_STEPS_PER_SCALE, device)

    def forward(self, indices: list, labels=None, steps_per_scale=4, layout: Layout | None = None):
        """Teacher-forced logits (B, N, n_embed) from per-scale code indices [(B, s, s), ...].

        In training mode the SPEC 6 regularisers apply and the block split is random unless a
        `layout` is given (a compiled training step draws it outside the graph). Labels are not
        range-checked here (that would be a host sync per step): see `check_labels`.
        """
        training = self.training
        device = indices[0].device
        if layout is None:
            layout = self.training_layout(device) if training else self.layout(steps_per_scale, device)
        codes = [self.autoenc.lookup(ind) for ind in indices]  # (B, 8, s, s) per scale
        prev_codes = codes
        if training and self.cfg.random_replace > 0:
            prev_codes = [self._random_replace(z) for z in codes]
        z_up = self.upsampled_sources(prev_codes)

        seq_codes, seq_up = [], []
        for k, (lo, hi) in enumerate(layout.scale_bounds):
            order = layout.cell[lo:hi]
            seq_codes.append(codes[k].flatten(2)[:, :, order])
            seq_up.append(z_up[k].flatten(2)[:, :, order])
        seq_codes = torch.cat(seq_codes, dim=2).transpose(1, 2)  # (B, N, 8)
        src = self.embed_sources(torch.cat(seq_up, dim=2).transpose(1, 2))  # (B, N, C)
        gt = self.embed_codevecs_mlp(seq_codes)  # (B, N, C)
        x = self.token_inputs(layout.pos_id, layout.prev_pos_id, layout.has_prev, src, gt[:, layout.prev_index])

        modulations = None
        if self.cfg.class_cond:
            if labels is None:
                raise ValueError("this model is class-conditional: labels are required")
            if training and self.cfg.label_drop_prob > 0:
                drop = torch.rand(labels.shape, device=labels.device) < self.cfg.label_drop_prob
                labels = torch.where(drop, self.cfg.num_classes, labels)
            cond = self.class_embeddings(labels)  # (B, C)
            x = torch.cat([cond[:, None], x], dim=1)  # (B, L, C)
            modulations = self.llama.modulations(cond)
        elif labels is not None:
            raise ValueError("this model is unconditional: pass labels=None")
        h = self.llama(x, modulations, layout.rot_pos, layout.rot_prev, layout.mask)
        return self.lm_head(h[:, layout.n_cls:])  # (B, N, n_embed)

    def _random_replace(self, z):
        """Swap a share of code vectors for random codebook rows (SPEC 6)."""
        B, _, s, _ = z.shape
        book = self.autoenc.codebook()
        replace = torch.rand(B, 1, s, s, device=z.device) < self.cfg.random_replace
        random_codes = book[torch.randint(0, book.shape[0], (B, s, s), device=z.device)].permute(0, 3, 1, 2)
        return torch.where(replace, random_codes, z)

    def sequence_targets(self, indices: list, layout: Layout):
        return torch.cat([ind.flatten(1)[:, layout.cell[lo:hi]]
                          for ind, (lo, hi) in zip(indices, layout.scale_bounds)], dim=1)  # (B, N)

    def loss(self, indices: list, labels=None, steps_per_scale=4, layout: Layout | None = None):
        """Mean cross entropy over all tokens, plus per-scale loss / top-1 as tensors (no host sync)."""
        logits = self(indices, labels, steps_per_scale, layout)
        # Only the token order is read, the same for every split of the blocks.
        layout = layout or self.layout(steps_per_scale, indices[0].device)
        targets = self.sequence_targets(indices, layout)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
        correct = (logits.argmax(-1) == targets).float()
        stats = {"loss_total": ce.mean()}
        for s, (lo, hi) in zip(self.scale_sizes, layout.scale_bounds):
            stats[f"loss_scale_size{s}"] = ce[:, lo:hi].mean()
            stats[f"top1_acc_scale_size{s}"] = correct[:, lo:hi].mean()
        return stats["loss_total"], stats

    @torch.no_grad()
    def teacher_forced_logits(self, imgs, labels=None, steps_per_scale=4):
        """(B, N, n_embed) logits in eval mode, tokens by scale then checkerboard rank."""
        self.check_labels(labels)
        was_training = self.training
        self.eval()
        try:
            return self(self.autoenc.encode_pyramid(imgs, self.scale_sizes), labels, steps_per_scale)
        finally:
            self.train(was_training)

    def generate(self, labels=None, batch_size=None, cfg=0.0, cfg_start_step=5, steps_per_scale=4,
                 temperature=1.0, generator=None, return_trace=False, compile=False):
        """Sample images block by block (models/sampler.py): see `sampler.generate`."""
        from .sampler import generate

        return generate(self, labels=labels, batch_size=batch_size, cfg=cfg, cfg_start_step=cfg_start_step,
                        steps_per_scale=steps_per_scale, temperature=temperature, generator=generator,
                        return_trace=return_trace, compile=compile)

