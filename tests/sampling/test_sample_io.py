"""sampling.sample_io: uint8 conversion, shards and the streamed ADM npz; labels and seeds by index
(sampling.plan, sampling.seeds)."""
import numpy as np
import pytest
import torch

from sampling import plan, sample_io, seeds


def test_to_uint8_rounds_to_the_nearest_level_and_is_nhwc():
    # 127.5 * (x + 1) = 100.6 must give 101 (truncation gives 100); -1 -> 0, 1 -> 255.
    x = torch.tensor([-1.0, 1.0, 100.6 / 127.5 - 1, 100.4 / 127.5 - 1, 1.5, -3.0]).view(1, 1, 2, 3).expand(1, 3, 2, 3)
    out = sample_io.to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 3, 3)
    assert out[0, :, :, 0].ravel().tolist() == [0, 255, 101, 100, 255, 0]


def test_labels_and_seeds_follow_the_global_sample_index():
    assert plan.balanced_labels(range(7, 13), 5).tolist() == [2, 3, 4, 0, 1, 2]
    assert plan.cycled_labels([0, 1, 2, 3, 4], [207, 360]).tolist() == [207, 360, 207, 360, 207]
    gens = lambda: seeds.sample_generators(3, [10, 11, 12], "cpu")  # noqa: E731
    a, b = plan.random_labels(gens(), 1000), plan.random_labels(gens(), 1000)
    assert torch.equal(a, b) and len(set(a.tolist())) > 1
    assert seeds.sample_seed(3, 10) == 3 * seeds.SEED_STRIDE + 10
    assert seeds.sample_generators(seeds.MAX_SEED, [seeds.SEED_STRIDE - 1], "cpu")  # the largest seed fits


def test_shard_ranges_cover_every_index_once():
    ranges = sample_io.shard_ranges(23, 10)
    assert ranges == [(0, 10), (10, 20), (20, 23)]
    with pytest.raises(ValueError, match="shard size"):
        sample_io.shard_ranges(5, 0)


def _write_shards(tmp_path, n=23, size=10, hw=(4, 5)):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *hw, 3), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % 5
    ranges = sample_io.shard_ranges(n, size)
    for lo, hi in ranges:
        sample_io.write_shard(tmp_path, lo, hi, images[lo:hi], labels[lo:hi])
    return images, labels, ranges


def test_packed_npz_equals_the_concatenated_shards(tmp_path):
    images, labels, ranges = _write_shards(tmp_path)
    out = sample_io.pack_shards(tmp_path, ranges, tmp_path / "samples.npz", with_labels=True)
    with np.load(out) as data:
        assert sorted(data.files) == ["arr_0", "arr_1"]
        assert data["arr_0"].dtype == np.uint8 and np.array_equal(data["arr_0"], images)
        assert np.array_equal(data["arr_1"], labels)
    assert sample_io.images_shape(out) == images.shape
    assert np.array_equal(sample_io.read_first_images(out, 7), images[:7])
    assert np.array_equal(sample_io.read_first_images(out, 100), images)
    assert not list(tmp_path.glob("*.tmp"))


def test_pack_refuses_a_gap_or_a_wrong_shard(tmp_path):
    images, labels, ranges = _write_shards(tmp_path)
    sample_io.shard_path(tmp_path, *ranges[1]).unlink()
    with pytest.raises(FileNotFoundError, match="shard_10_20"):
        sample_io.pack_shards(tmp_path, ranges, tmp_path / "samples.npz", with_labels=True)
    sample_io.save_arrays(sample_io.shard_path(tmp_path, *ranges[1]), images[:9], labels[:9])
    with pytest.raises(ValueError, match="holds 9 images"):
        sample_io.pack_shards(tmp_path, ranges, tmp_path / "samples.npz", with_labels=True)
    assert not (tmp_path / "samples.npz").exists()


def test_check_samples_counts_and_class_balance(tmp_path):
    images = np.zeros((20, 2, 2, 3), np.uint8)
    path = tmp_path / "s.npz"
    sample_io.save_arrays(path, images, np.arange(20) % 10)
    sample_io.check_samples(path, 20, 10)
    with pytest.raises(ValueError, match="expected exactly 30"):
        sample_io.check_samples(path, 30, 10)
    labels = np.arange(20) % 10
    labels[3] = 4
    sample_io.save_arrays(path, images, labels)
    sample_io.check_samples(path, 20, None)
    with pytest.raises(ValueError, match="class 3 has 1 samples, expected exactly 2"):
        sample_io.check_samples(path, 20, 10)
