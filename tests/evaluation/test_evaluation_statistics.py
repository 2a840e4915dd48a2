"""evaluation/statistics.py and the batch reader: each statistic against an independent computation."""
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.special import rel_entr, softmax

from conftest import REPO
from evaluation import statistics
from evaluation.batches import open_batch

RNG = np.random.default_rng(0)


def test_frechet_distance_matches_eigenvalue_formula():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) * 1.5 + 0.3
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # the product of two SPD matrices has real positive eigenvalues: tr sqrt = sum of their roots
    tr_covmean = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert statistics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    assert statistics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2
    d1, d2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    fid = statistics.frechet_distance(np.zeros(3), np.diag(d1), np.ones(3), np.diag(d2))
    assert fid == pytest.approx(3 + 1 + 0 + 4)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_frechet_distance_non_finite_sqrtm_adds_offset():
    # a nilpotent product has no square root; scipy returns inf and ADM retries with 1e-6 added
    s1, s2, eps = np.array([[0.0, 1.0], [0.0, 0.0]]), np.eye(2), 1e-6
    with pytest.warns(UserWarning, match="singular product"):
        fid = statistics.frechet_distance(np.zeros(2), s1, np.ones(2), s2)
    # sqrt of [[a, b], [0, a]] is [[sqrt a, .], [0, sqrt a]], here a = eps (1 + eps)
    assert fid == pytest.approx(2 + 0 + 2 - 2 * 2 * np.sqrt(eps * (1 + eps)), rel=1e-9)


def test_frechet_distance_drops_a_negligible_imaginary_part_and_refuses_a_large_one():
    mu = np.zeros(2)
    # a negligible imaginary part (sqrt(-1e-8) = 1e-4 i) is dropped
    assert statistics.frechet_distance(mu, np.eye(2), mu, np.diag([-1e-8, 1.0])) == pytest.approx(2 + (1 - 1e-8) - 2)
    with pytest.raises(ValueError, match="Imaginary component"):
        statistics.frechet_distance(mu, np.eye(2), mu, np.diag([-1.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        statistics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_inception_score_matches_scipys_kl_divergence():
    probs = softmax(np.random.default_rng(2).normal(size=(12, 7)) * 3, axis=1)

    def score(part):
        return np.exp(rel_entr(part, part.mean(0, keepdims=True)).sum(1).mean())

    assert statistics.inception_score(probs, split_size=5) == pytest.approx(
        np.mean([score(probs[:5]), score(probs[5:10]), score(probs[10:])]), rel=1e-10)
    assert statistics.inception_score(probs) == pytest.approx(score(probs), rel=1e-10)
    # confident and evenly spread over C classes scores C; identical predictions score 1
    assert statistics.inception_score(softmax(np.eye(10) * 50, axis=1)) == pytest.approx(10, rel=1e-6)
    assert statistics.inception_score(np.full((6, 4), 0.25)) == pytest.approx(1)


def _brute_force_pr(ref, sample, k):
    radii = [np.sort(cdist(x, x, "sqeuclidean"), axis=1)[:, k] for x in (ref, sample)]
    d = cdist(ref, sample, "sqeuclidean")
    return (d <= radii[0][:, None]).any(0).mean(), (d <= radii[1][None, :]).any(1).mean()


def test_precision_recall_against_brute_force():
    # multiples of 1/4 in 8 dimensions: every distance and every step of ADM's float16 formula is
    # exact (multiples of 1/16 below 128), so float16 and float64 agree (float16: test_evaluation_distances.py)
    rng = np.random.default_rng(3)
    ref, sample = rng.integers(-7, 8, size=(53, 8)) / 4, rng.integers(-5, 8, size=(41, 8)) / 4
    for k in (1, 3, 5):
        expected = _brute_force_pr(ref, sample, k)
        assert statistics.precision_recall(ref, sample, k=k, batch_size=7) == pytest.approx(expected)
    ref_radii = statistics.manifold_radii(ref, 3, batch_size=10)
    np.testing.assert_array_equal(ref_radii, np.sort(cdist(ref, ref, "sqeuclidean"), axis=1)[:, 3])
    # by hand: third-neighbour radii^2 of 0, 1, 2, 3 are 9, 4, 4, 9, so samples 1.5 and 1 lie
    # inside reference balls and 20, -30 do not; the samples' wide balls hold every reference
    line = np.arange(4.0)[:, None]
    np.testing.assert_array_equal(statistics.manifold_radii(line), [9, 4, 4, 9])
    assert statistics.precision_recall(line, np.array([[1.5], [20.0], [-30.0], [1.0]])) == (0.5, 1.0)


def test_importing_the_package_and_the_script_loads_neither_tensorflow_nor_torch():
    # precision and recall load TensorFlow, for ADM's float16 distances (evaluation/distances.py)
    code = ("import sys, numpy as np, evaluation, evaluator; from evaluation import statistics; "
            "statistics.frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2)); "
            "statistics.inception_score(np.full((4, 3), 1 / 3)); "
            "loaded = [m for m in ('tensorflow', 'torch', 'matplotlib') if m in sys.modules]; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_is_streamed_in_batches(tmp_path, save):
    images = RNG.integers(0, 256, size=(11, 5, 6, 3), dtype=np.uint8)
    save(tmp_path / "x.npz", images)
    batch = open_batch(str(tmp_path / "x.npz"))
    chunks = list(batch.read(4))
    assert batch.count == 11 and [len(c) for c in chunks] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(chunks), images)
