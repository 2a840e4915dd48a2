"""Progressive checkerboard scan order, the scale pyramid and the split of a scale into blocks
(docs/method.md sections 1, 2 and 4; the random split of training: section 6)."""
import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch


def _power_of_two_order(n: int) -> list[tuple[int, int]]:
    if n == 1:
        return [(0, 0)]
    h = n // 2
    sub = _power_of_two_order(h)
    # Quadrant offsets (x, y) in the fixed visiting order: top-left, bottom-right,
    # top-right, bottom-left. Round-robin over them spreads each step's cells evenly.
    quads = [(0, 0), (h, h), (h, 0), (0, h)]
    return [(x + qx, y + qy) for (x, y) in sub for (qx, qy) in quads]


@lru_cache(maxsize=None)
def _rank_numpy(n: int) -> np.ndarray:
    p = 1 << max(0, (n - 1).bit_length())
    rank = np.empty((p, p), dtype=np.int64)
    for r, (x, y) in enumerate(_power_of_two_order(p)):
        rank[y, x] = r
    window = rank[:n, :n]
    # Renumber the kept cells 0..n*n-1, preserving their relative order.
    return np.argsort(np.argsort(window.ravel(), kind="stable"), kind="stable").reshape(n, n)


def checkerboard_rank(n: int) -> torch.Tensor:
    """(n, n) int64 tensor: rank[y, x] is the position of cell (x, y) in the scan order."""
    if n < 1:
        raise ValueError(f"grid size must be >= 1, got {n}")
    return torch.from_numpy(_rank_numpy(n).copy())


def checkerboard_order(n: int) -> torch.Tensor:
    """(n*n,) flat indices y*n+x of the cells in scan order (the inverse of the rank)."""
    return torch.argsort(checkerboard_rank(n).flatten())


def block_size(num_tokens: int, steps: int) -> int:
    """Tokens per block when a scale of `num_tokens` is sampled in `steps` steps."""
    if steps < 1:
        raise ValueError(f"steps per scale must be >= 1, got {steps}")
    return max(1, num_tokens // steps)


def split_sizes(num_tokens: int, block: int, merge_remainder: bool = False) -> list[int]:
    """The blocks of a scale: consecutive runs of `block` tokens in scan order. A short last run is
    a block of its own, or, with `merge_remainder` (training only), part of the last full run."""
    if not 1 <= block <= num_tokens:
        raise ValueError(f"block size must be in 1..{num_tokens}, got {block}")
    full, remainder = divmod(num_tokens, block)
    sizes = [block] * full
    if remainder and merge_remainder:
        sizes[-1] += remainder
    elif remainder:
        sizes.append(remainder)
    return sizes


def total_steps(scale_sizes, steps) -> int:
    """The number of sampling steps (blocks) over all scales for these steps per scale."""
    return sum(len(block_sizes(s * s, p)) for s, p in zip(scale_sizes, steps))


def block_sizes(num_tokens: int, steps: int) -> list[int]:
    """The blocks of a scale sampled in `steps` steps (a remainder adds one step)."""
    return split_sizes(num_tokens, block_size(num_tokens, steps))


def random_block_probabilities(num_tokens: int) -> list[Fraction]:
    """P(block = b) for b = 1..num_tokens under training's random rule: x uniform in
    1..m = floor(sqrt(n)); x or n // x with equal odds, except that n // m is redrawn when m divides
    n (with n = m*m, m would otherwise be counted twice). Exact, by enumerating the draws."""
    if num_tokens < 1:
        raise ValueError(f"a scale has at least one token, got {num_tokens}")
    m = math.isqrt(num_tokens)
    weights = [Fraction(0)] * (num_tokens + 1)
    for x in range(1, m + 1):
        weights[x] += Fraction(1, 2 * m)
        if not (x == m and num_tokens % m == 0):
            weights[num_tokens // x] += Fraction(1, 2 * m)
    total = sum(weights)
    return [w / total for w in weights[1:]]


def scale_sizes(grid: int, ratio: float, min_size: int = 1) -> list[int]:
    """Side lengths of the latent scales, smallest first (docs/method.md section 2)."""
    if not (ratio > 1 and math.isfinite(ratio)):
        raise ValueError(f"scale_ratio must be a finite number > 1, got {ratio}")
    if min_size < 1 or min_size > grid:
        raise ValueError(f"scale_min_size must be in 1..{grid}, got {min_size}")
    values = [float(grid)]
    while values[-1] > min_size:
        values.append(values[-1] / ratio)
    if values[-1] == 0:
        values.pop()
    values.append(min_size)
    rounded = np.round(np.array(values)).astype(int)
    if (rounded == 0).any():
        raise ValueError(f"scale_ratio {ratio} with grid {grid} gives a zero-size scale: {values}")
    return sorted(set(rounded.tolist()))


def scale_ratio_from_config(value) -> float:
    """Configs write the ratio as a number or as an expression like 'sqrt(2)'."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if text.startswith("sqrt(") and text.endswith(")"):
        return math.sqrt(float(text[5:-1]))
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"scale_ratio: cannot read {value!r} (a number or 'sqrt(N)')") from None
