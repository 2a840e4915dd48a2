""".npz files read and written an array piece at a time: a 50k-sample ADM batch is 10 GB.

An .npz is a zip archive with one `<key>.npy` member per array (stored, or deflated by
np.savez_compressed); a member starts with the .npy header (shape, dtype, order), then the
array's bytes. Reading the header alone gives an array's shape without reading its data, and
C-ordered rows can be read in sequence from the open member.
"""
import math
import zipfile
import zlib
from contextlib import contextmanager
from typing import Iterable, Iterator, NamedTuple

import numpy as np


class ArrayHeader(NamedTuple):
    shape: tuple
    dtype: np.dtype
    fortran_order: bool


def _read_header(f) -> ArrayHeader:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(f)
    return ArrayHeader(shape, dtype, fortran_order)


@contextmanager
def _member(path, key: str):
    """(open member positioned at the first data byte, its header); ValueError naming the file when
    it is no zip archive, has no array `key`, or that array is no .npy array of numbers (an array of
    Python objects would be a pickle: never loaded)."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not an .npz file (or one cut short)") from None
    with zf:
        try:
            f = zf.open(f"{key}.npy")
        except KeyError:
            raise ValueError(f"{path}: no '{key}' array") from None
        with f:
            try:
                header = _read_header(f)
            except (ValueError, EOFError, zipfile.BadZipFile) as e:
                raise ValueError(f"{path}: '{key}' is not a readable .npy array ({e})") from None
            if header.dtype.hasobject:
                raise ValueError(f"{path}: '{key}' holds Python objects (a pickle), which are never loaded")
            try:
                yield f, header
            except zipfile.BadZipFile as e:  # a damaged member shows when its end is read (CRC check)
                raise ValueError(f"{path}: '{key}' is damaged ({e})") from None


def array_names(path) -> list[str]:
    """The arrays an .npz holds, without reading any."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [name[:-len(".npy")] for name in zf.namelist() if name.endswith(".npy")]
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not an .npz file (or one cut short)") from None


def array_header(path, key: str) -> ArrayHeader:
    """Shape, dtype and order of array `key`, without reading its data."""
    with _member(path, key) as (_, header):
        return header


def iter_rows(path, key: str, batch_size: int) -> Iterator[np.ndarray]:
    """Array `key` in consecutive blocks of `batch_size` rows (the last may be shorter), holding one
    block in memory at a time."""
    with _member(path, key) as (f, header):
        if header.fortran_order:  # rare, and its rows are not contiguous: read it whole
            array = read_array(path, key)
            yield from (array[i:i + batch_size] for i in range(0, len(array), batch_size))
            return
        row_shape = header.shape[1:]
        row_bytes = math.prod(row_shape) * header.dtype.itemsize
        for start in range(0, header.shape[0], batch_size):
            n = min(batch_size, header.shape[0] - start)
            data = f.read(n * row_bytes)
            if len(data) < n * row_bytes:
                raise ValueError(f"{path}: '{key}' is cut short: {header.shape[0]} rows announced, the data ends "
                                 f"in row {start + len(data) // max(row_bytes, 1)}")
            yield np.frombuffer(data, dtype=header.dtype).reshape(n, *row_shape)


def first_rows(path, key: str, count: int) -> np.ndarray:
    """The first `count` rows of array `key` (all of them if it has fewer), reading only their bytes."""
    first = next(iter_rows(path, key, max(count, 1)), None)
    if first is None:
        shape = array_header(path, key)
        return np.zeros((0, *shape.shape[1:]), dtype=shape.dtype)
    return first[:count]


# What numpy raises for a file it cannot read: not a zip / .npy, cut short, a damaged member, a pickle.
_UNREADABLE = (ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def read_arrays(path, keys=None) -> dict:
    """Whole arrays of an .npz: every array, or those named in `keys`. Arrays of Python objects are
    refused (they would be pickles); any unreadable file or array is one ValueError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError(f"{path}: not an .npz file")
            wanted = list(data.files if keys is None else keys)
            missing = [key for key in wanted if key not in data.files]
            if missing:
                raise ValueError(f"{path}: no '{missing[0]}' array")
            return {key: data[key] for key in wanted}
    except _UNREADABLE as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None


def read_array(path, key: str) -> np.ndarray:
    """One whole array of an .npz (see `read_arrays`)."""
    return read_arrays(path, [key])[key]


def read_npy(path, mmap: bool = False) -> np.ndarray:
    """A whole .npy array (memory-mapped when `mmap`); arrays of Python objects refused, any unreadable
    file one ValueError naming it."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except _UNREADABLE as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from None


def write_array(zf: zipfile.ZipFile, key: str, shape: tuple, dtype, chunks: Iterable[np.ndarray]) -> None:
    """Array `key` of `shape` into an open zip archive from `chunks` of consecutive rows, so that
    the whole array never has to be in memory."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_2_0(f, header)
        for chunk in chunks:
            f.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
