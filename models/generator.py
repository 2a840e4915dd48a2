"""The progressive checkerboard generator: its inputs (docs/method.md section 4), the transformer
pass and head (section 5) and the teacher-forced loss with training's regularisers (section 6).

The model knows nothing of generation state. A sampler (models/sampler.py) drives it block by block
through a narrow interface: `condition` (the class), `scale_sources` (the transition from one scale
to the next), `block_inputs`, `hidden` (a transformer pass, writing keys and values into buffers the
sampler owns), `logits`, `embed_codes` and `decode`; `sequence` gathers between sequence and grids.
Training runs the same functions over the whole sequence at once.
"""
import operator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .autoencoder import VQModel
from .checkerboard import scale_sizes
from .checkpoint_format import use_published_keys
from .config import GeneratorConfig
from .layout import Layout, SequenceLayout
from .transformer import Transformer, TransformerConfig


class CodeVectorMLP(nn.Module):
    """Code vectors (..., embed_dim) -> model width (..., dim): two SiLU layers of max(64, embed_dim),
    then a linear map."""

    def __init__(self, embed_dim: int, dim: int, out_bias: bool = True):
        super().__init__()
        hidden = max(64, embed_dim)
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim, bias=out_bias))

    def forward(self, x):
        return self.net(x)


class L2ByGradient(torch.autograd.Function):
    """The identity whose backward adds `strength * w` to the gradient: the pull of an L2 penalty
    (strength/2)|w|^2, with no term in the loss."""

    @staticmethod
    def forward(ctx, w, strength: float):
        ctx.save_for_backward(w)
        ctx.strength = strength
        return w.view_as(w)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad + ctx.strength * w, None


@dataclass
class Conditioning:
    """The class embedding of each row and, per layer, its AdaLN modulations: they depend on the
    class only, so a sampler computes them once per sample."""

    embedding: torch.Tensor  # (B, C), the class token's input
    modulations: list  # per layer, the (shift, scale) pairs of its two AdaLN layers


class CheckerboardGenerator(nn.Module):
    def __init__(self, config: GeneratorConfig, autoencoder: VQModel):
        super().__init__()
        self.config = config
        lc = config.llama_config
        transformer_config = TransformerConfig(lc.hidden_size, lc.num_hidden_layers, lc.num_attention_heads,
                                               lc.intermediate_size, config.num_mixing_layers, config.class_cond,
                                               lc.rms_norm_eps)
        C = transformer_config.dim
        if config.img_size % autoencoder.stride:
            raise ValueError(f"model.img_size {config.img_size} is not a multiple of the autoencoder's stride "
                             f"{autoencoder.stride}")
        grid = config.img_size // autoencoder.stride
        self.scale_sizes = ([grid] if config.single_scale
                            else scale_sizes(grid, config.scale_ratio, config.scale_min_size))
        self.sequence = SequenceLayout(self.scale_sizes, 1 if config.class_cond else 0, config.num_blocks_per_scale)
        self.num_tokens = self.sequence.num_tokens

        self.empty_token_emb = nn.Parameter(torch.zeros(C))
        self.empty_token_pos = nn.Parameter(torch.zeros(C))
        self.autoenc = autoencoder
        self.autoenc.scale_sizes = self.scale_sizes
        self.autoenc.requires_grad_(False)
        self.transformer = Transformer(transformer_config, self.scale_sizes)
        use_published_keys(self)  # its state dict says `llama.` for `transformer.`, as the published model's
        if config.class_cond:
            self.class_embeddings = nn.Embedding(config.num_classes + 1, C)  # last row: "no class"
        self.embed_positions = nn.Embedding(self.num_tokens, C)
        self.embed_codevecs_mlp = CodeVectorMLP(autoencoder.config.embed_dim, C)
        self.src_latents_proj = nn.Linear(C, C)
        self.combine_inputs = nn.Linear(4 * C, C)
        if config.use_head_mlp:
            self.head_mlp = CodeVectorMLP(autoencoder.config.embed_dim, C, out_bias=False)
        self.lm_head = nn.Linear(C, autoencoder.config.n_embed)
        # The published model's effective initialisation (docs/method.md section 5): the transformer
        # initialised itself above; the layers built since keep PyTorch's defaults (the embeddings
        # normal with std 1); the head starts at zero, so every code starts equally likely.
        nn.init.zeros_(self.lm_head.weight)
        nn.init.zeros_(self.lm_head.bias)

    @property
    def autoencoder(self) -> VQModel:
        return self.autoenc

    @property
    def width(self) -> int:
        return self.combine_inputs.out_features

    @property
    def codebook_size(self) -> int:
        return self.lm_head.out_features

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the generator computes in (the autoencoder may differ)."""
        return self.lm_head.weight.dtype

    def kv_cache_shape(self, rows: int) -> tuple[int, tuple]:
        """(layers, shape of one layer's key or value buffer) of caches over the whole sequence."""
        config = self.transformer.config
        return config.n_layers, (rows, config.n_heads, self.sequence.n_cls + self.num_tokens, config.head_dim)

    def train(self, mode: bool = True):
        super().train(mode)
        self.autoenc.eval()  # frozen: its layers never switch to training behaviour
        return self

    # ---- layouts -------------------------------------------------------------------------
    def steps_per_scale_list(self, steps_per_scale=None) -> tuple:
        """One step count per scale from an int, a list, or None (the model's num_blocks_per_scale)."""
        if steps_per_scale is None:
            steps_per_scale = self.config.num_blocks_per_scale
        given = steps_per_scale
        if not isinstance(given, (list, tuple)):
            steps_per_scale = [given] * len(self.scale_sizes)
        steps = []
        for p in steps_per_scale:
            # int-like only: 2.5 steps is a mistake to report, not a number to round
            if isinstance(p, bool) or not hasattr(p, "__index__") or operator.index(p) < 1:
                raise ValueError(f"steps_per_scale must be an integer >= 1 or a list of them (one per scale), "
                                 f"got {given!r}")
            steps.append(operator.index(p))
        if len(steps) != len(self.scale_sizes):
            raise ValueError(f"steps_per_scale has {len(steps)} entries but the model has "
                             f"{len(self.scale_sizes)} scales {self.scale_sizes}")
        return tuple(steps)

    def layout(self, steps_per_scale=None) -> Layout:
        """The block split of sampling with these steps per scale (None: the model's default)."""
        if steps_per_scale is None:
            return self.sequence.inference_layout()
        return self.sequence.inference_layout(self.steps_per_scale_list(steps_per_scale))

    def training_layout(self) -> Layout:
        """A block split drawn for one training step (docs/method.md section 6), on the device."""
        return self.sequence.training_layout(self.config.random_block_size)

    # ---- inputs --------------------------------------------------------------------------
    def _check_labels_present(self, labels):
        """Labels exactly for a class-conditional model; no host sync, so `condition` checks it too."""
        if not self.config.class_cond and labels is not None:
            raise ValueError("this model is unconditional: pass labels=None")
        if self.config.class_cond and labels is None:
            raise ValueError("this model is class-conditional: labels are required")

    def check_labels(self, labels):
        self._check_labels_present(labels)
        if labels is not None and labels.numel() and (int(labels.min()) < 0
                                                      or int(labels.max()) >= self.config.num_classes):
            raise ValueError(f"labels must be in 0..{self.config.num_classes - 1}, got "
                             f"{sorted(set(labels.tolist()))[:5]}...")

    def condition(self, labels) -> Conditioning | None:
        """The class conditioning of rows with these labels (B,) (num_classes = "no class"), None
        for an unconditional model."""
        self._check_labels_present(labels)
        if labels is None:
            return None
        embedding = self.class_embeddings(labels)  # (B, C)
        return Conditioning(embedding, self.transformer.modulations(embedding))

    def embed_codes(self, indices):
        """Code indices (B, n) -> embedded code vectors (B, n, C)."""
        return self.embed_codevecs_mlp(self.autoenc.codebook()[indices])

    def scale_sources(self, previous, k: int, batch_size: int):
        """The transition into scale k: embedded sources (B, n_k, C) in scan order, from the code
        vectors of the finished scale k-1, given as indices (B, s, s), rescaled to scale k. Scale 0
        has no previous one and reads zero vectors (still embedded and projected, as the published
        model does)."""
        s = self.scale_sizes[k]
        if k == 0:
            book = self.autoenc.codebook()
            z_up = book.new_zeros(batch_size, book.shape[1], s, s)
        else:
            z_up = self.autoenc.rescale_latents(self.autoenc.lookup(previous), s)  # (B, 8, s, s)
        z_up = self.sequence.scale_to_sequence(z_up, k).transpose(1, 2)  # (B, n_k, 8)
        return self.src_latents_proj(self.embed_codevecs_mlp(z_up))

    def block_inputs(self, layout: Layout, tokens, src, seq_codes):
        """Input vectors (B, n, C) of the tokens `tokens` (n,) (sequence indices; None: all N):
        their embedded sources src (B, n, C) and the embedded codes seq_codes (B, N, C) of the whole
        sequence, of which each token reads its t'. Where t' is "empty" the learned empty vectors
        stand in."""
        pos_id, prev_pos_id, has_prev, prev_index = (
            self.sequence.pos_id, layout.prev_pos_id, layout.has_prev, layout.prev_index)
        if tokens is not None:
            pos_id, prev_pos_id, has_prev, prev_index = (
                pos_id[tokens], prev_pos_id[tokens], has_prev[tokens], prev_index[tokens])
        pos_table = self.embed_positions.weight
        has = has_prev[:, None]
        pos_prev = torch.where(has, pos_table[prev_pos_id], self.empty_token_pos)  # (n, C)
        code_prev = torch.where(has, seq_codes[:, prev_index], self.empty_token_emb)  # (B, n, C)
        B = src.shape[0]
        x = torch.cat([pos_table[pos_id].expand(B, -1, -1), src, pos_prev.expand(B, -1, -1), code_prev], dim=-1)
        return self.combine_inputs(x)  # (B, n, C)

    # ---- transformer and head --------------------------------------------------------------
    def hidden(self, x, conditioning: Conditioning | None, layout: Layout, positions=None, caches=None):
        """Transformer pass over inputs x (B, n, C) at sequence positions (n,) (None: the whole
        sequence, class token included). With `caches` (per layer (keys, values) buffers of L
        slots) the pass writes its keys and values there and attends over the buffers."""
        modulations = None if conditioning is None else conditioning.modulations
        rot_pos, rot_prev, mask = self.sequence.rot_pos, layout.rot_prev, layout.mask
        if positions is not None:
            rot_pos, rot_prev, mask = rot_pos[positions], rot_prev[positions], mask[positions]
        return self.transformer(x, modulations, rot_pos, rot_prev, mask, caches, positions)  # (B, n, C)

    def logits(self, h):
        """(B, n, n_embed) from hidden states (B, n, C). With the head MLP, a map of the (frozen)
        codebook adds to the head's weights; in training an L2 penalty acts on that addition
        through its gradient only."""
        if not self.config.use_head_mlp:
            return self.lm_head(h)
        w = self.head_mlp(self.autoenc.codebook().detach())  # (n_embed, C)
        if self.training and self.config.head_weights_l2_loss > 0:
            w = L2ByGradient.apply(w, self.config.head_weights_l2_loss)
        return F.linear(h, self.lm_head.weight + w, self.lm_head.bias)

    def decode(self, indices):
        """RGB images (B, 3, H, W) in [-1, 1] from code indices (B, s, s) of a scale."""
        return self.autoenc.decode(self.autoenc.lookup(indices))

    # ---- teacher forcing -----------------------------------------------------------------
    def forward(self, indices: list, labels=None, steps_per_scale=None, layout: Layout | None = None):
        """Teacher-forced logits (B, N, n_embed) from per-scale code indices [(B, s, s), ...].

        The split into blocks is `layout` if given; else in training mode one drawn on the device
        (docs/method.md section 6), in eval mode that of `steps_per_scale` (None: the model's
        default). In training mode the regularisers of section 6 apply. Labels are not
        range-checked here (that would be a host sync per step): see `check_labels`.
        """
        training = self.training
        if layout is None:
            layout = self.training_layout() if training else self.layout(steps_per_scale)
        B = indices[0].shape[0]
        inputs = previous = indices  # the codes gt(t') reads, and those the next scale's sources read
        if training and self.config.random_replace > 0:
            if self.config.random_replace_sampled:
                inputs = previous = indices[:1] + [self._random_replace(ind) for ind in indices[1:]]
            else:
                previous = [self._random_replace(ind) for ind in indices[:-1]]
        src = torch.cat([self.scale_sources(previous[k - 1] if k else None, k, B)
                         for k in range(len(self.scale_sizes))], dim=1)  # (B, N, C)
        gt = self.embed_codes(self.sequence.to_sequence(inputs))  # (B, N, C)
        x = self.block_inputs(layout, None, src, gt)  # (B, N, C)

        if self.config.class_cond and labels is not None and training and self.config.uncond_training_prob > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.config.uncond_training_prob
            labels = torch.where(drop, self.config.num_classes, labels)
        conditioning = self.condition(labels)
        if conditioning is not None:
            x = torch.cat([conditioning.embedding[:, None], x], dim=1)  # (B, L, C)
        h = self.hidden(x, conditioning, layout)
        return self.logits(h[:, self.sequence.n_cls:])  # (B, N, n_embed)

    def _random_replace(self, indices):
        """Swap a share of the codes (B, s, s) for random ones: their vectors become random codebook rows."""
        replace = torch.rand(indices.shape, device=indices.device) < self.config.random_replace
        return torch.where(replace, torch.randint_like(indices, self.codebook_size), indices)

    def loss(self, indices: list, labels=None, steps_per_scale=None, layout: Layout | None = None):
        """Mean cross entropy over all tokens, plus per-scale loss / top-1 as tensors (no host sync)."""
        logits = self(indices, labels, steps_per_scale, layout)
        targets = self.sequence.to_sequence(indices)  # (B, N)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
        correct = (logits.argmax(-1) == targets).float()
        stats = {"loss_total": ce.mean()}
        for s, (lo, hi) in zip(self.scale_sizes, self.sequence.scale_bounds):
            stats[f"loss_scale_size{s}"] = ce[:, lo:hi].mean()
            stats[f"top1_acc_scale_size{s}"] = correct[:, lo:hi].mean()
        return stats["loss_total"], stats

    @torch.no_grad()
    def teacher_forced_logits(self, imgs, labels=None, steps_per_scale=None):
        """(B, N, n_embed) logits in eval mode of images (B, 3, img_size, img_size), tokens by scale then
        checkerboard rank."""
        size = self.config.img_size
        if imgs.ndim != 4 or tuple(imgs.shape[1:]) != (3, size, size):
            # another size would be encoded to another grid, of which the scales read only a corner
            raise ValueError(f"images must be (B, 3, {size}, {size}) for this {size} px model, got "
                             f"{tuple(imgs.shape)}")
        self.check_labels(labels)
        was_training = self.training
        self.eval()
        try:
            return self(self.autoenc.encode_pyramid(imgs, self.scale_sizes), labels, steps_per_scale)
        finally:
            self.train(was_training)
