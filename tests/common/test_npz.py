"""common/npz.py: array headers and rows read from an .npz without loading the whole array."""
import numpy as np
import pytest

from common import npz

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
@pytest.mark.parametrize("fortran", [False, True])
def test_header_and_rows_read_back_as_saved_in_batches(tmp_path, save, fortran):
    images = RNG.integers(0, 256, (7, 3, 2, 3), dtype=np.uint8)
    save(tmp_path / "x.npz", arr_0=np.asfortranarray(images) if fortran else images, arr_1=np.arange(7))
    header = npz.array_header(tmp_path / "x.npz", "arr_0")
    assert header.shape == (7, 3, 2, 3) and header.dtype == np.uint8 and header.fortran_order == fortran
    blocks = list(npz.iter_rows(tmp_path / "x.npz", "arr_0", 3))
    assert [len(b) for b in blocks] == [3, 3, 1] and np.array_equal(np.concatenate(blocks), images)
    assert np.array_equal(npz.first_rows(tmp_path / "x.npz", "arr_0", 5), images[:5])
    assert np.array_equal(npz.first_rows(tmp_path / "x.npz", "arr_0", 50), images)
    assert npz.first_rows(tmp_path / "x.npz", "arr_0", 0).shape == (0, 3, 2, 3)


def test_missing_array_or_file_names_the_file(tmp_path):
    np.savez(tmp_path / "x.npz", pictures=np.zeros(3))
    with pytest.raises(ValueError, match=r"x.npz: no 'arr_0' array"):
        npz.array_header(tmp_path / "x.npz", "arr_0")
    (tmp_path / "y.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"y.npz: not an .npz file"):
        npz.array_header(tmp_path / "y.npz", "arr_0")


def test_whole_arrays_are_read_and_pickles_refused(tmp_path):
    np.savez(tmp_path / "x.npz", arr_0=np.arange(6).reshape(2, 3), mu=np.ones(2))
    assert npz.array_names(tmp_path / "x.npz") == ["arr_0", "mu"]
    arrays = npz.read_arrays(tmp_path / "x.npz")
    assert sorted(arrays) == ["arr_0", "mu"] and np.array_equal(arrays["arr_0"], np.arange(6).reshape(2, 3))
    assert np.array_equal(npz.read_array(tmp_path / "x.npz", "mu"), np.ones(2))
    with pytest.raises(ValueError, match=r"x.npz: no 'sigma' array"):
        npz.read_array(tmp_path / "x.npz", "sigma")
    np.savez(tmp_path / "objects.npz", arr_0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"objects.npz: not a readable .npz file \(.*allow_pickle"):
        npz.read_arrays(tmp_path / "objects.npz")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"objects.npy: not a readable .npy array"):
        npz.read_npy(tmp_path / "objects.npy")
    np.save(tmp_path / "plain.npy", np.arange(3))
    assert np.array_equal(npz.read_npy(tmp_path / "plain.npy", mmap=True), np.arange(3))
    (tmp_path / "short.npz").write_bytes((tmp_path / "x.npz").read_bytes()[:40])
    with pytest.raises(ValueError, match=r"short.npz: not"):
        npz.read_arrays(tmp_path / "short.npz")
