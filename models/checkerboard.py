"""Progressive checkerboard scan order, the scale pyramid and the split of a scale into blocks."""
import math
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


def block_sizes(num_tokens: int, steps: int) -> list[int]:
    """Contiguous runs of the scan order sampled together; a short last run is its own block."""
    if steps < 1:
        raise ValueError(f"steps per scale must be >= 1, got {steps}")
    block = max(1, num_tokens // steps)
    sizes = [block] * (num_tokens // block)
    if num_tokens % block:
        sizes.append(num_tokens % block)
    return sizes


def scale_sizes(grid: int, ratio: float, min_size: int = 1) -> list[int]:
    """Side lengths of the latent scales, smallest first (SPEC 2)."""
    if not ratio > 1:
        raise ValueError(f"scale_ratio must be > 1, got {ratio}")
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
