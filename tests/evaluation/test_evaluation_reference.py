"""evaluation/reference.py: statistics files and reference statistics cached by content, with a
numpy stand-in for a feature network that counts the images it sees."""
import numpy as np
import pytest

from evaluation import evaluate_samples, reference_statistics, statistics
from evaluation.batches import EvalError, open_batch
from common.content_hash import content_hash
from evaluation.reference import batch_features, cache_path, save_statistics


class CountingNetwork:
    """Pool features: the mean colour of each 2x2 quadrant (12 values); spatial: a 4x4 grey map."""

    def __init__(self, name="digits", identity="counting-1"):
        self.name, self.identity, self.images_seen = name, identity, 0

    def check_image_shape(self, shape):
        pass

    def activations(self, batches, total=None, desc=None):
        pools, spatials = [], []
        for batch in batches:
            self.images_seen += len(batch)
            x = batch.astype(np.float64) / 255
            n, h, w, _ = x.shape
            pools.append(x.reshape(n, 2, h // 2, 2, w // 2, 3).mean((2, 4)).reshape(n, -1))
            spatials.append(x.mean(3).reshape(n, 4, h // 4, 4, w // 4).mean((2, 4)).reshape(n, -1))
        return np.concatenate(pools), np.concatenate(spatials)

    def class_probs(self, pool):
        e = np.exp(pool[:, :5] * 4)
        return e / e.sum(1, keepdims=True)


def images(n, seed, size=8, brightness=1.0):
    return (np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3)) * brightness).astype(np.uint8)


@pytest.fixture
def ref_file(tmp_path):
    np.savez(tmp_path / "ref.npz", images(40, 0))
    return tmp_path / "ref.npz"


def test_reference_is_read_once_per_content_and_network(tmp_path, ref_file):
    cache, net = tmp_path / "cache", CountingNetwork()
    first = reference_statistics(ref_file, net, batch_size=16, cache_dir=cache)
    assert net.images_seen == 40
    entry = cache_path(cache, content_hash(ref_file), net)
    assert [p.name for p in cache.iterdir()] == [entry.name] and net.identity in entry.name
    again = reference_statistics(ref_file, net, batch_size=16, cache_dir=cache)
    assert net.images_seen == 40  # read from the cache
    for key in ("mu", "sigma", "mu_s", "sigma_s"):
        np.testing.assert_array_equal(again.stats[key], first.stats[key])
    np.testing.assert_array_equal(again.pool, first.pool)
    np.testing.assert_array_equal(again.radii, statistics.manifold_radii(first.pool))
    assert again.image_shape == (8, 8) and again.features == "digits"

    # another network, or the same file with other content, is computed again beside the first entry
    other = CountingNetwork(identity="counting-2")
    reference_statistics(ref_file, other, cache_dir=cache)
    assert other.images_seen == 40 and len(list(cache.iterdir())) == 2
    np.savez(ref_file, images(40, 1))
    reference_statistics(ref_file, net, cache_dir=cache)
    assert net.images_seen == 80 and len(list(cache.iterdir())) == 3


def test_cached_entry_of_another_file_is_refused(tmp_path, ref_file):
    cache, net = tmp_path / "cache", CountingNetwork()
    reference_statistics(ref_file, net, cache_dir=cache)
    entry = next(cache.iterdir())
    np.savez(tmp_path / "other.npz", images(40, 5))
    # an entry under this file's key whose recorded source is another file
    (entry.parent / cache_path(cache, content_hash(tmp_path / "other.npz"), net).name).write_bytes(entry.read_bytes())
    with pytest.raises(EvalError, match="not computed from"):
        reference_statistics(tmp_path / "other.npz", net, cache_dir=cache)


def test_cached_metrics_equal_uncached(tmp_path, ref_file, monkeypatch):
    np.savez(tmp_path / "sample.npz", images(30, 2, brightness=0.8))
    net = CountingNetwork()
    plain = evaluate_samples(reference_statistics(ref_file, net), tmp_path / "sample.npz", net, batch_size=7)
    reference_statistics(ref_file, net, cache_dir=tmp_path / "cache")
    reference = reference_statistics(ref_file, net, cache_dir=tmp_path / "cache")
    radii_of = []
    monkeypatch.setattr(statistics, "manifold_radii",
                        lambda features, *a, **k: radii_of.append(len(features)) or np.full(len(features), 0.5))
    evaluate_samples(reference, tmp_path / "sample.npz", net)
    assert radii_of == [30]  # the samples' radii only: the reference's come from the cache
    monkeypatch.undo()
    cached = evaluate_samples(reference, tmp_path / "sample.npz", net)
    assert list(plain) == ["digits_is", "digits_fid", "digits_sfid", "digits_precision", "digits_recall"]
    assert cached == pytest.approx(plain, rel=1e-12) and plain["digits_fid"] > 0.01
    np.savez(tmp_path / "big.npz", images(30, 2, size=16))
    with pytest.raises(EvalError, match="8x8 images but .*big.npz holds 16x16"):
        evaluate_samples(reference_statistics(ref_file, net), tmp_path / "big.npz", net)


def test_statistics_file_round_trip_and_its_network(tmp_path, ref_file):
    net = CountingNetwork()
    computed = batch_features(net, open_batch(ref_file))
    save_statistics(tmp_path / "stats.npz", computed)
    loaded = batch_features(net, open_batch(tmp_path / "stats.npz"))
    assert net.images_seen == 40 and loaded.image_shape == (8, 8) and loaded.features_identity == net.identity
    np.testing.assert_array_equal(loaded.pool, computed.pool)
    np.testing.assert_array_equal(loaded.radii, statistics.manifold_radii(computed.pool))
    with pytest.raises(EvalError, match="statistics of the digits features, not of the inception"):
        batch_features(CountingNetwork(name="inception"), open_batch(tmp_path / "stats.npz"))
    with pytest.raises(EvalError, match="another digits network"):
        batch_features(CountingNetwork(identity="counting-2"), open_batch(tmp_path / "stats.npz"))


def test_radii_of_another_arithmetic_are_computed_again(tmp_path, ref_file):
    # a file of the float32 evaluator: its radii, without radii_arithmetic, are not ADM's float16 ones
    net = CountingNetwork()
    save_statistics(tmp_path / "stats.npz", batch_features(net, open_batch(ref_file)))
    saved = dict(np.load(tmp_path / "stats.npz"))
    assert str(saved["radii_arithmetic"]) == statistics.RADII_ARITHMETIC
    del saved["radii_arithmetic"]
    saved["radii"] = saved["radii"] + 1
    np.savez(tmp_path / "float32.npz", **saved)
    loaded = batch_features(net, open_batch(tmp_path / "float32.npz"))
    assert loaded.radii is None
    np.testing.assert_array_equal(loaded.with_radii().radii, statistics.manifold_radii(saved["pool"]))


def test_adm_precomputed_statistics_are_inception_ones(tmp_path):
    pool = np.random.default_rng(3).normal(size=(10, 12))
    adm = dict(mu=pool.mean(0), sigma=np.cov(pool, rowvar=False), mu_s=np.zeros(16), sigma_s=np.eye(16))
    np.savez(tmp_path / "adm.npz", arr_0=images(10, 4), **adm)
    inception = batch_features(CountingNetwork(name="inception"), open_batch(tmp_path / "adm.npz"))
    np.testing.assert_array_equal(inception.stats["mu"], adm["mu"])  # they win, as in ADM
    assert inception.features_identity is None
    with pytest.raises(EvalError, match="adm.npz holds statistics of the inception features, not of the digits"):
        batch_features(CountingNetwork(name="digits"), open_batch(tmp_path / "adm.npz"))
    np.savez(tmp_path / "half.npz", arr_0=images(10, 4), mu=adm["mu"], sigma=adm["sigma"])
    with pytest.raises(EvalError, match="has mu, sigma but not mu_s, sigma_s"):
        batch_features(CountingNetwork(name="inception"), open_batch(tmp_path / "half.npz"))


def test_a_folders_content_hash_covers_its_images_only(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(images(4, 6)):
        Image.fromarray(image).save(folder / f"{i}.png")
    first = content_hash(folder)
    (folder / "notes.txt").write_text("not an image")
    assert content_hash(folder) == first
    (folder / "3.png").rename(folder / "4.png")
    assert content_hash(folder) != first
