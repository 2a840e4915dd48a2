"""Sample files: uint8 conversion, resumable shards, the ADM npz.

The ADM evaluator reads `arr_0` uint8 (N, H, W, 3) and, for class-conditional samples, `arr_1`
int64 labels (N,). Shards hold the same two arrays for the global sample indices
start..end-1 and are written atomically (common/files.py), so a killed run leaves only whole shards behind.
"""
import zipfile
from pathlib import Path

import numpy as np
import torch

from common import npz
from common.files import atomic_write

IMAGES_KEY, LABELS_KEY = "arr_0", "arr_1"


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounded to the nearest level (not truncated)."""
    levels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return levels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# ---------------------------------------------------------------- shards


def shard_ranges(num_samples: int, shard_size: int) -> list[tuple[int, int]]:
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    return [(lo, min(lo + shard_size, num_samples)) for lo in range(0, num_samples, shard_size)]


def shard_path(shard_dir, start: int, end: int) -> Path:
    return Path(shard_dir) / f"shard_{start}_{end}.npz"


def save_arrays(path, images: np.ndarray, labels: np.ndarray | None) -> None:
    """An ADM-layout npz (uncompressed), written atomically."""
    arrays = {IMAGES_KEY: images}
    if labels is not None:
        arrays[LABELS_KEY] = labels
    atomic_write(path, lambda f: np.savez(f, **arrays))


def write_shard(shard_dir, start: int, end: int, images: np.ndarray, labels: np.ndarray | None) -> Path:
    if len(images) != end - start:
        raise ValueError(f"shard {start}..{end} got {len(images)} images")
    path = shard_path(shard_dir, start, end)
    save_arrays(path, images, labels)
    return path


# ---------------------------------------------------------------- the packed npz


def read_labels(path, require_labels: bool = True) -> np.ndarray | None:
    """arr_1 of an npz, without reading its images."""
    if LABELS_KEY not in npz.array_names(path):
        if require_labels:
            raise ValueError(f"{path}: no '{LABELS_KEY}' (labels) array")
        return None
    return npz.read_array(path, LABELS_KEY)


def images_shape(path) -> tuple:
    """Shape of arr_0 from its header, without reading the images."""
    return npz.array_header(path, IMAGES_KEY).shape


def read_first_images(path, count: int) -> np.ndarray:
    """The first `count` images of arr_0, reading only their bytes."""
    return npz.first_rows(path, IMAGES_KEY, count)


def pack_shards(shard_dir, ranges: list[tuple[int, int]], out_path, with_labels: bool) -> Path:
    """Concatenate the shards of `ranges` (in order) into one ADM npz, streaming shard by shard
    so that memory holds one shard, not all N images. Every shard must exist and hold exactly
    its range; the file appears atomically."""
    paths = [shard_path(shard_dir, lo, hi) for lo, hi in ranges]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) missing, first: {missing[0]}")
    sample_shape = None
    for (lo, hi), p in zip(ranges, paths):
        shape = images_shape(p)
        if shape[0] != hi - lo:
            raise ValueError(f"{p}: holds {shape[0]} images, its range needs {hi - lo}")
        if sample_shape is not None and shape[1:] != sample_shape:
            raise ValueError(f"{p}: image shape {shape[1:]} differs from the other shards' {sample_shape}")
        sample_shape = shape[1:]
    total = ranges[-1][1] - ranges[0][0]

    def shard_arrays(key):
        for p in paths:
            yield npz.read_array(p, key)

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            npz.write_array(zf, IMAGES_KEY, (total, *sample_shape), np.uint8, shard_arrays(IMAGES_KEY))
            if with_labels:
                npz.write_array(zf, LABELS_KEY, (total,), np.int64, shard_arrays(LABELS_KEY))

    atomic_write(out_path, write)
    return Path(out_path)


def check_samples(path, num_samples: int, num_classes: int | None) -> None:
    """Exactly num_samples images and, with num_classes, exactly num_samples / num_classes of each class."""
    n = images_shape(path)[0]
    if n != num_samples:
        raise ValueError(f"{path}: holds {n} samples, expected exactly {num_samples}")
    if num_classes is None:
        return
    labels = read_labels(path)
    if len(labels) != num_samples:
        raise ValueError(f"{path}: {len(labels)} labels for {num_samples} samples")
    counts = np.bincount(labels, minlength=num_classes)
    per_class = num_samples // num_classes
    wrong = np.flatnonzero(counts != per_class)
    if len(counts) != num_classes or len(wrong):
        c = int(wrong[0]) if len(wrong) else num_classes
        raise ValueError(f"{path}: class {c} has {int(counts[c]) if c < len(counts) else 0} samples, "
                         f"expected exactly {per_class} per class")
