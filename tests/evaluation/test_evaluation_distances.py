"""Precision and recall in the float16 arithmetic of ADM's evaluator (evaluation/distances.py,
evaluation/statistics.py), against two implementations written here from ADM's description:

* a numpy one, rounding to float16 after every operation of ADM's formula. It matches TensorFlow
  bit for bit only where the sums inside the norms and the matmul are exact in any order (TensorFlow
  on the CPU sums norms with float16 partial sums): features on a grid of quarters, few dimensions.
  There float16 still rounds, in the cast of the features and in the additions of the formula, and
  float32 distances give other precision and recall;
* a TensorFlow one (eager ops, ADM's structure of blocks), for realistic 2048-d features.
"""
import numpy as np
import pytest

from evaluation import statistics
from evaluation.distances import sq_distances

K = 3
FP16_MAX_SQUARE = 256.0  # 256**2 = 65536 overflows float16 (largest finite 65504)


def grid_features(rng, n, dims=32, noise=True):
    """Multiples of 1/4 with magnitudes 1/2 .. 7/4: squares, products and every partial sum of a
    norm or dot product of up to 32 dimensions (at most 98) are multiples of 1/16 below 128, exact in
    float16 and float32 in any order. `noise`: float32 offsets below half a float16 step, which the cast removes and
    which break the many ties of grid distances in float32."""
    magnitudes = rng.integers(2, 8, size=(n, dims)) / 4
    x = (magnitudes * rng.choice([-1, 1], size=(n, dims))).astype(np.float32)
    if noise:
        x += rng.uniform(-2**-13, 2**-13, size=(n, dims)).astype(np.float32)
    return x


def mirror_block(u, v):
    """ADM's distance block in numpy: float16 after each operation, float32 if anything overflows."""
    u16, v16 = u.astype(np.float16), v.astype(np.float16)
    # exact sums (float64) rounded once to float16: equal to any order's for grid features
    with np.errstate(over="ignore", invalid="ignore"):
        u_sq = (u16 * u16).astype(np.float64).sum(1).astype(np.float16)
        v_sq = (v16 * v16).astype(np.float64).sum(1).astype(np.float16)
        dot = (u16.astype(np.float64) @ v16.astype(np.float64).T).astype(np.float16)
        d = np.maximum((u_sq[:, None] - np.float16(2) * dot) + v_sq[None, :], np.float16(0))
    if np.isfinite(d).all():
        return d.astype(np.float32), False
    u64, v64 = u.astype(np.float64), v.astype(np.float64)  # exact for noise-free grid features
    d32 = np.maximum((u64 * u64).sum(1)[:, None] - 2 * u64 @ v64.T + (v64 * v64).sum(1)[None, :], 0)
    return d32.astype(np.float32), True


def adm_precision_recall(ref, sample, block, distances):
    """ADM's ManifoldEstimator: whole rows of distances for the radii, blocks of rows and columns
    for the comparisons; `distances(u, v)` gives one block."""
    def radii(x):
        rows = []
        for i in range(0, len(x), block):
            row = np.concatenate([distances(x[i : i + block], x[j : j + block]) for j in range(0, len(x), block)], 1)
            rows.append(np.partition(row, np.arange(K + 1), axis=1)[:, K])
        return np.concatenate(rows)

    ref_radii, sample_radii = radii(ref), radii(sample)
    ref_in, sample_in = np.zeros(len(ref), bool), np.zeros(len(sample), bool)
    for i in range(0, len(ref), block):
        for j in range(0, len(sample), block):
            d = distances(ref[i : i + block], sample[j : j + block])
            ref_in[i : i + block] |= (d <= sample_radii[None, j : j + block]).any(1)
            sample_in[j : j + block] |= (d <= ref_radii[i : i + block, None]).any(0)
    return (sample_in.mean(), ref_in.mean()), ref_radii


def float32_precision_recall(ref, sample):
    def block(u, v):
        return np.maximum((u * u).sum(1)[:, None] - 2 * u @ v.T + (v * v).sum(1)[None, :], 0)
    return adm_precision_recall(ref, sample, len(ref) + len(sample), block)[0]


def test_distances_round_in_float16_as_adm_computes_them():
    rng = np.random.default_rng(0)
    u, v = grid_features(rng, 60), grid_features(rng, 50)
    expected, fell_back = mirror_block(u, v)
    np.testing.assert_array_equal(sq_distances(u, v), expected)
    assert not fell_back
    # the rounding is there: in the cast (float32 sees the offsets) and in the additions (the
    # exact distances of the float16 features are not all float16 numbers)
    u16, v16 = u.astype(np.float16).astype(np.float64), v.astype(np.float16).astype(np.float64)
    exact = ((u16[:, None, :] - v16[None, :, :]) ** 2).sum(2)
    assert (expected != exact).any() and (expected != ((u[:, None, :] - v[None, :, :]) ** 2).sum(2)).mean() > 0.99


def test_a_block_that_overflows_float16_is_computed_in_float32():
    rng = np.random.default_rng(1)
    u, v = grid_features(rng, 20, noise=False), grid_features(rng, 30, noise=False)
    assert (mirror_block(u, v)[0] != sq_distances(u, v)).sum() == 0
    big = v.copy()
    big[7, 0] = FP16_MAX_SQUARE
    expected, fell_back = mirror_block(u, big)
    assert fell_back and np.isfinite(expected).all()
    np.testing.assert_array_equal(sq_distances(u, big), expected)
    # only that block: its neighbours keep float16 rounding
    assert (sq_distances(u, big[:5]) != expected[:, :5]).any()


@pytest.mark.parametrize("block", [17, 10000])
def test_precision_recall_equal_the_float16_mirror_where_float32_differs(block):
    # in 3 dimensions, grid distances tie often: float16 counts a tie with a radius inside, the
    # float32 offsets decide it either way
    rng = np.random.default_rng(1)
    ref, sample = grid_features(rng, 150, dims=3), grid_features(rng, 120, dims=3)
    (precision, recall), ref_radii = adm_precision_recall(ref, sample, block, lambda u, v: mirror_block(u, v)[0])
    assert statistics.precision_recall(ref, sample, batch_size=block) == (precision, recall)
    np.testing.assert_array_equal(statistics.manifold_radii(ref, batch_size=block), ref_radii)
    assert statistics.precision_recall(ref, sample, batch_size=block, ref_radii=ref_radii) == (precision, recall)
    # float32 distances (the evaluator before) answer otherwise on these features
    p32, r32 = float32_precision_recall(ref, sample)
    assert abs(p32 - precision) + abs(r32 - recall) > 0.03, (p32, r32, precision, recall)


def test_precision_recall_equal_tensorflow_float16_on_inception_like_features():
    tf = pytest.importorskip("tensorflow")

    def tf_block(u, v):
        def formula(a, b):
            a_sq, b_sq = tf.reduce_sum(a * a, axis=1)[:, None], tf.reduce_sum(b * b, axis=1)[None, :]
            return tf.maximum(a_sq - tf.matmul(a, b, transpose_b=True) * 2 + b_sq, 0)
        d = formula(tf.constant(u, tf.float16), tf.constant(v, tf.float16))
        if not bool(tf.reduce_all(tf.math.is_finite(d))):
            d = formula(tf.constant(u), tf.constant(v))
        return tf.cast(d, tf.float32).numpy()

    # pool_3 features are averages of ReLUs: non-negative, squared norms of a few hundred
    rng = np.random.default_rng(3)
    ref = rng.gamma(0.3, 0.7, size=(700, 2048)).astype(np.float32)
    sample = (rng.gamma(0.3, 0.7, size=(600, 2048)) * 1.05).astype(np.float32)
    (precision, recall), ref_radii = adm_precision_recall(ref, sample, 256, tf_block)
    assert statistics.precision_recall(ref, sample, batch_size=256) == (precision, recall)
    np.testing.assert_array_equal(statistics.manifold_radii(ref, batch_size=256), ref_radii)
    assert (precision, recall) != float32_precision_recall(ref, sample)
