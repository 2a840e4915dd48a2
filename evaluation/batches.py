"""The evaluator's inputs: an npz of images (ADM's layout), a folder of images, or a statistics file.

Everything that can be checked without reading the pixels is checked when a batch is opened, so a
wrong file is named before any network runs; what only the pixels tell (a corrupt image deep in a
folder) is named when it is read. Every problem is an `EvalError`: one line naming the file.
"""
import os
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from common import npz
from common.images import IMAGE_EXTENSIONS, ImageError, list_images, load_rgb_array
from evaluation.statistics import NEIGHBOURS, STAT_KEYS

MIN_IMAGES = NEIGHBOURS + 1  # precision and recall need each point's k-th neighbour besides itself
# What a damaged file raises from numpy and zipfile, besides OSError and ValueError
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


class EvalError(ValueError):
    """A problem with the evaluator's inputs; the message is one line naming the file or option."""


@dataclass
class Batch:
    """An opened input. Images to stream through a feature network (`read`), and/or what a
    statistics file or an ADM batch holds already (`saved`: STAT_KEYS, pool, ... as arrays)."""
    path: str
    count: int
    image_shape: Optional[tuple]  # (H, W) of its images; None for a statistics file that lacks it
    read: Optional[Callable[[int], Iterator[np.ndarray]]] = None  # batch_size -> uint8 NHWC batches
    saved: Optional[dict] = None


def _check_images(shape, dtype, what):
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or shape[0] == 0:
        raise EvalError(f"{what} must be uint8 images of shape (N, H, W, 3), got {np.dtype(dtype)} {tuple(shape)}")


def _check_count(count, path):
    if count < MIN_IMAGES:
        raise EvalError(f"{path} holds {count} images; precision and recall (k={NEIGHBOURS} nearest "
                        f"neighbours) need at least {MIN_IMAGES}")


def _stream_rows(path, batch_size):
    try:
        yield from npz.iter_rows(path, "arr_0", batch_size)
    except READ_ERRORS as e:
        raise EvalError(f"{path}: arr_0 cannot be read ({e})") from None


def _open_npz(path):
    try:
        names = npz.array_names(path)
        saved = npz.read_arrays(path, [k for k in names if not k.startswith("arr_")])
        has_images = "arr_0" in names
        header = npz.array_header(path, "arr_0") if has_images else None
    except READ_ERRORS as e:
        raise EvalError(f"cannot read {path}: {e}") from None
    if header is None:
        if not all(k in saved for k in (*STAT_KEYS, "pool")):
            raise EvalError(f"{path} has no arr_0 (nor mu, sigma, mu_s, sigma_s, pool from --save_stats)")
        if "image_shape" not in saved:
            raise EvalError(f"{path} is a statistics file that does not record its image size (written by an "
                            f"older evaluator.py): write it again with --save_stats")
        _check_count(len(saved["pool"]), path)
        return Batch(path, len(saved["pool"]), tuple(int(v) for v in saved["image_shape"]), saved=saved)
    _check_images(header.shape, header.dtype, f"{path} arr_0")
    _check_count(header.shape[0], path)
    # streamed from the zip member rather than holding 50k images in memory
    return Batch(path, header.shape[0], tuple(header.shape[1:3]), lambda batch_size: _stream_rows(path, batch_size),
                 saved=saved or None)


def _load_image(path):
    try:
        image = npz.read_npy(path) if path.suffix.lower() == ".npy" else load_rgb_array(path)
    except ImageError as e:
        raise EvalError(str(e)) from None
    except READ_ERRORS as e:  # e.g. a .npy of Python objects, refused without pickle
        raise EvalError(f"{path}: cannot read the array ({e})") from None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise EvalError(f"{path} must be a uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
    return image


def _open_folder(path):
    files = list_images(path, IMAGE_EXTENSIONS + (".npy",))
    if not files:
        raise EvalError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)}) or .npy arrays")
    first = _load_image(files[0])
    _check_count(len(files), path)

    def read(batch_size):
        for i in range(0, len(files), batch_size):
            images = [_load_image(p) for p in files[i : i + batch_size]]
            for p, image in zip(files[i:], images):
                if image.shape != first.shape:
                    raise EvalError(f"{p} has shape {image.shape}, unlike {files[0]} with {first.shape}")
            yield np.stack(images)

    return Batch(path, len(files), first.shape[:2], read)


def open_batch(path) -> Batch:
    """Check an npz or image folder and return it as a Batch."""
    path = str(path)
    if os.path.isdir(path):
        return _open_folder(path)
    if not os.path.isfile(path):
        raise EvalError(f"{path} not found")
    if not zipfile.is_zipfile(path):
        raise EvalError(f"{path} is neither an npz file nor a folder of images")
    return _open_npz(path)
