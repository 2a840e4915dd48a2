"""The token sequence and its split into blocks, computed on the device (docs/method.md sections 4-6).

Tokens run scale by scale, smallest first, each scale in checkerboard order: N tokens, plus the
class token in front (n_cls = 1) of a class-conditional model, L = n_cls + N in all.
`SequenceLayout` holds what a model's sequence never changes (where each token sits) and makes the
`Layout` of any split into blocks from one small tensor per scale: the block size and whether the
remainder joins the last full block. Every tensor of a layout has a shape fixed by the model (N, L
or L x L), whatever the split: a compiled training step never sees a new shape, and nothing is
kept per split.
"""
import itertools
from dataclasses import dataclass

import torch
import torch.nn as nn

from .checkerboard import block_size, checkerboard_order, random_block_probabilities

RESOLUTION_BITS = 32  # of the random block size table


@dataclass(frozen=True)
class Layout:
    """One split into blocks, as device tensors."""

    block: torch.Tensor  # (N,) the step that samples each token, counted from 0 over all scales
    prev_index: torch.Tensor  # (N,) sequence index of t', the token it reads (0 where t' is "empty")
    has_prev: torch.Tensor  # (N,) bool: t' exists
    prev_pos_id: torch.Tensor  # (N,) position row of t' (0 where it is "empty")
    rot_prev: torch.Tensor  # (L,) rotary row of t': the class id for the class token, the empty id where empty
    mask: torch.Tensor  # (L, L) bool: which tokens each token attends to


def blockwise_causal_mask(block: torch.Tensor) -> torch.Tensor:
    """(L, L) bool from each token's block (L,): a token attends to every token of its own block
    and of all earlier blocks."""
    return block[None, :] <= block[:, None]


class SequenceLayout(nn.Module):
    """Index tables of a model's token sequence, and layouts of block splits built from them.

    The tables are buffers derived from the scale sizes (not in the state dict), made on the device
    the model is built on; on the host when that is the meta device, so that a model loaded there
    with `assign=True` still has real tables to carry to its device.
    """

    def __init__(self, scale_sizes: list[int], n_cls: int, default_steps: int):
        super().__init__()
        self.scale_sizes = list(scale_sizes)
        self.n_cls = n_cls
        self.num_tokens = sum(s * s for s in scale_sizes)
        # Rotary rows after the grid cells.
        self.class_pos_id, self.empty_pos_id = self.num_tokens, self.num_tokens + 1
        bounds, start = [], 0
        for s in scale_sizes:
            bounds.append((start, start + s * s))
            start += s * s
        self.scale_bounds = tuple(bounds)  # ((start, end), ...) per scale, class token excluded

        device = torch.get_default_device()
        device = torch.device("cpu") if device.type == "meta" else device
        cell = torch.cat([checkerboard_order(s) for s in scale_sizes]).to(device)
        offsets = torch.tensor([lo for lo, _ in bounds], device=device)
        scale = torch.cat([torch.full((s * s,), k, device=device) for k, s in enumerate(scale_sizes)])
        pos_id = offsets[scale] + cell
        lengths = torch.tensor([s * s for s in scale_sizes], device=device)
        self._buffer("scale", scale)  # (N,) scale index of each token
        self._buffer("cell", cell)  # (N,) flat index y*s+x of each token inside its scale
        self._buffer("rank", torch.arange(self.num_tokens, device=device) - offsets[scale])  # (N,) index in its scale
        self._buffer("pos_id", pos_id)  # (N,) row of the shared position table: offset + y*s + x
        # (N,) sequence index of the cell at each position row: gathers the sequence back into grids.
        self._buffer("token_of_pos", torch.argsort(pos_id))
        self._buffer("rot_pos", torch.cat([torch.full((n_cls,), self.class_pos_id, device=device), pos_id]))  # (L,)
        self._buffer("scale_len", lengths)  # (K,)
        default_block = [block_size(s * s, default_steps) for s in scale_sizes]
        self._buffer("default_block", torch.tensor(default_block, device=device))  # (K,)
        # Training draws the block size of each scale by inverse CDF from this (K, max n) table: the
        # exact distribution of the random rule in units of 2^-RESOLUTION_BITS, one uniform integer
        # per scale, no host work per step. Integers, so that casting the model's dtype leaves it be.
        cdf = torch.full((len(scale_sizes), max(s * s for s in scale_sizes)), 1 << RESOLUTION_BITS, device=device)
        for k, s in enumerate(scale_sizes):
            cumulative = itertools.accumulate(random_block_probabilities(s * s))
            cdf[k, :s * s] = torch.tensor([round(c * (1 << RESOLUTION_BITS)) for c in cumulative], device=device)
        self._buffer("random_block_cdf", cdf)

    def _buffer(self, name: str, value: torch.Tensor):
        self.register_buffer(name, value, persistent=False)

    # ---- sequence <-> grids ----------------------------------------------------------------
    def to_sequence(self, grids: list) -> torch.Tensor:
        """Per-scale grids [(B, ..., s, s)] -> their values in sequence order (B, ..., N)."""
        return torch.cat([g.flatten(-2) for g in grids], dim=-1)[..., self.pos_id]

    def scale_to_sequence(self, grid: torch.Tensor, k: int) -> torch.Tensor:
        """One grid (B, ..., s, s) of scale k -> its values in scan order (B, ..., n_k)."""
        lo, hi = self.scale_bounds[k]
        return grid.flatten(-2)[..., self.cell[lo:hi]]

    def to_grid(self, seq: torch.Tensor, k: int) -> torch.Tensor:
        """Values in sequence order (..., N) -> the grid of scale k (..., s, s)."""
        lo, hi = self.scale_bounds[k]
        s = self.scale_sizes[k]
        return seq[..., self.token_of_pos[lo:hi]].unflatten(-1, (s, s))

    # ---- splits --------------------------------------------------------------------------------
    def layout(self, block: torch.Tensor, merge: torch.Tensor) -> Layout:
        """The layout of a split: `block` (K,) tokens per block of each scale, `merge` (K,) bool
        whether a scale's remainder joins its last full block (its tokens then read "empty" as t').
        Tensor operations of fixed shapes only: no host sync, no host data."""
        b = block[self.scale]  # (N,)
        full = self.scale_len[self.scale] // b
        merged = merge[self.scale] & (self.rank >= full * b)  # remainder tokens inside the last full block
        local = torch.where(merged, full - 1, self.rank // b)  # block index inside the scale
        has_prev = (self.rank >= b) & ~merged
        index = torch.arange(self.num_tokens, device=block.device)
        prev_index = torch.where(has_prev, index - b, 0)
        separate_remainder = (self.scale_len % block > 0) & ~merge
        blocks_per_scale = self.scale_len // block + separate_remainder.long()  # (K,)
        first_block = torch.cumsum(blocks_per_scale, 0) - blocks_per_scale
        step = first_block[self.scale] + local  # (N,)
        prev_pos_id = torch.where(has_prev, self.pos_id[prev_index], 0)
        head = self.rot_pos[:self.n_cls]  # the class token reads its own row as t'
        rot_prev = torch.cat([head, torch.where(has_prev, prev_pos_id, self.empty_pos_id)])  # (L,)
        seq_block = torch.cat([torch.zeros_like(head), step + self.n_cls])  # the class token is block 0
        return Layout(step, prev_index, has_prev, prev_pos_id, rot_prev, blockwise_causal_mask(seq_block))

    def inference_layout(self, steps: tuple | None = None) -> Layout:
        """The split of sampling: `steps` per scale (None: the model's default), a remainder is a
        block of its own."""
        block = self.default_block if steps is None else torch.tensor(
            [block_size(s * s, p) for s, p in zip(self.scale_sizes, steps)], device=self.default_block.device)
        return self.layout(block, torch.zeros_like(block, dtype=torch.bool))

    def training_layout(self, random_block_size: bool) -> Layout:
        """A split drawn for one training step from torch's generator on the device: the block size
        of each scale from the random rule (or the default steps), and each remainder joining the
        last full block with probability 1/2."""
        cdf = self.random_block_cdf
        if random_block_size:
            u = torch.randint(0, 1 << RESOLUTION_BITS, (cdf.shape[0], 1), device=cdf.device)
            block = 1 + (cdf <= u).sum(-1)  # inverse CDF: P(block = b) = (cdf[b-1] - cdf[b-2]) / 2^bits
        else:
            block = self.default_block
        merge = torch.rand(cdf.shape[0], device=cdf.device) < 0.5
        return self.layout(block, merge)
