"""evaluator.py: each statistic against an independent computation, the whole TensorFlow path
on a stand-in Inception graph built here, and the one-line command errors."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.distance import cdist
from scipy.special import rel_entr, softmax

from conftest import REPO

import evaluator

RNG = np.random.default_rng(0)
# stand-in weights: 2x2 stride-2 conv (3 -> 8 channels), pool projection 32 -> 16, 10 classes
CONV_W = RNG.normal(size=(2, 2, 3, 8)).astype(np.float32)
POOL_W = RNG.normal(size=(32, 16)).astype(np.float32)
LOGIT_W = RNG.normal(size=(16, 10)).astype(np.float32)
METRICS = ("Inception Score", "FID", "sFID", "Precision", "Recall")


# ---------------------------------------------------------------- statistics


def test_frechet_distance_matches_eigenvalue_formula():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) * 1.5 + 0.3
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # the product of two SPD matrices has real positive eigenvalues: tr sqrt = sum of their roots
    tr_covmean = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert evaluator.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    assert evaluator.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2
    d1, d2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    fid = evaluator.frechet_distance(np.zeros(3), np.diag(d1), np.ones(3), np.diag(d2))
    assert fid == pytest.approx(3 + 1 + 0 + 4)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_frechet_distance_non_finite_sqrtm_adds_offset():
    # a nilpotent product has no square root; scipy returns inf and ADM retries with 1e-6 added
    s1, s2, eps = np.array([[0.0, 1.0], [0.0, 0.0]]), np.eye(2), 1e-6
    with pytest.warns(UserWarning, match="singular product"):
        fid = evaluator.frechet_distance(np.zeros(2), s1, np.ones(2), s2)
    # sqrt of [[a, b], [0, a]] is [[sqrt a, .], [0, sqrt a]], here a = eps (1 + eps)
    assert fid == pytest.approx(2 + 0 + 2 - 2 * 2 * np.sqrt(eps * (1 + eps)), rel=1e-9)


def test_frechet_distance_imaginary_part():
    mu = np.zeros(2)
    # a negligible imaginary part (sqrt(-1e-8) = 1e-4 i) is dropped
    assert evaluator.frechet_distance(mu, np.eye(2), mu, np.diag([-1e-8, 1.0])) == pytest.approx(2 + (1 - 1e-8) - 2)
    with pytest.raises(ValueError, match="Imaginary component"):
        evaluator.frechet_distance(mu, np.eye(2), mu, np.diag([-1.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        evaluator.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_inception_score_against_scipy_kl():
    probs = softmax(np.random.default_rng(2).normal(size=(12, 7)) * 3, axis=1)

    def score(part):
        return np.exp(rel_entr(part, part.mean(0, keepdims=True)).sum(1).mean())

    assert evaluator.inception_score(probs, split_size=5) == pytest.approx(
        np.mean([score(probs[:5]), score(probs[5:10]), score(probs[10:])]), rel=1e-10)
    assert evaluator.inception_score(probs) == pytest.approx(score(probs), rel=1e-10)
    # confident and evenly spread over C classes scores C; identical predictions score 1
    assert evaluator.inception_score(softmax(np.eye(10) * 50, axis=1)) == pytest.approx(10, rel=1e-6)
    assert evaluator.inception_score(np.full((6, 4), 0.25)) == pytest.approx(1)


def _brute_force_pr(ref, sample, k):
    radii = [np.sort(cdist(x, x, "sqeuclidean"), axis=1)[:, k] for x in (ref, sample)]
    d = cdist(ref, sample, "sqeuclidean")
    return (d <= radii[0][:, None]).any(0).mean(), (d <= radii[1][None, :]).any(1).mean()


def test_precision_recall_against_brute_force():
    rng = np.random.default_rng(3)
    ref, sample = rng.normal(size=(53, 8)), rng.normal(size=(41, 8)) * 1.3 + 0.4
    for k in (1, 3, 5):
        expected = _brute_force_pr(ref, sample, k)
        assert evaluator.precision_recall(ref, sample, k=k, batch_size=7) == pytest.approx(expected)
    ref_radii = evaluator.manifold_radii(ref, 3, batch_size=10)
    np.testing.assert_allclose(ref_radii, np.sort(cdist(ref, ref, "sqeuclidean"), axis=1)[:, 3], rtol=1e-5)
    # by hand: third-neighbour radii^2 of 0, 1, 2, 3 are 9, 4, 4, 9, so samples 1.5 and 1 lie
    # inside reference balls and 20, -30 do not; the samples' wide balls hold every reference
    line = np.arange(4.0)[:, None]
    np.testing.assert_array_equal(evaluator.manifold_radii(line), [9, 4, 4, 9])
    assert evaluator.precision_recall(line, np.array([[1.5], [20.0], [-30.0], [1.0]])) == (0.5, 1.0)


def test_statistics_need_no_tensorflow():
    code = ("import sys, numpy as np, evaluator; "
            "evaluator.frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2)); "
            "evaluator.inception_score(np.full((4, 3), 1 / 3)); "
            "evaluator.precision_recall(np.eye(5), np.eye(5)); "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_is_streamed_in_batches(tmp_path, save):
    images = RNG.integers(0, 256, size=(11, 5, 6, 3), dtype=np.uint8)
    save(tmp_path / "x.npz", images)
    batch = evaluator.open_batch(str(tmp_path / "x.npz"))
    chunks = list(batch.read(4))
    assert batch.count == 11 and [len(c) for c in chunks] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(chunks), images)


# ---------------------------------------------------------------- end to end through TensorFlow


def build_standin_graph(path):
    """A tiny graph with the tensor names ADM reads from classify_image_graph_def.pb."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow.compat.v1 as tf

    with tf.Graph().as_default() as g:
        image = tf.placeholder(tf.float32, [None, None, 3], name="Cast")
        x = tf.expand_dims(image, 0, name="ExpandDims")
        x = tf.nn.avg_pool2d(x, 8, 8, "VALID") / 255  # stands in for the resize to 299x299
        conv = tf.nn.conv2d(x, tf.constant(CONV_W), 2, "VALID", name="mixed_6/conv")
        pool = tf.reshape(tf.matmul(tf.reshape(tf.tanh(conv), [-1, 32]), POOL_W), [-1, 1, 1, 16], name="pool_3")
        logits = tf.matmul(tf.reshape(pool, [-1, 16], name="pool_3/_reshape"), tf.constant(LOGIT_W),
                           name="softmax/logits/MatMul")
        tf.nn.softmax(logits, name="softmax")
    path.write_bytes(g.as_graph_def().SerializeToString())


def standin_features(images):
    """The stand-in graph in numpy: pool features, spatial features, class probabilities."""
    n = len(images)
    x = images.astype(np.float64).reshape(n, 4, 8, 4, 8, 3).mean((2, 4)) / 255
    conv = np.einsum("nipjqc,pqcd->nijd", x.reshape(n, 2, 2, 2, 2, 3), CONV_W)
    pool = np.tanh(conv).reshape(n, 32) @ POOL_W
    return pool, conv[..., :7].reshape(n, -1), softmax(pool @ LOGIT_W, axis=1)


def run_evaluator(*args, env=None):
    return subprocess.run([sys.executable, "evaluator.py", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True)


def parse(text):
    return {name: float(value) for name, value in (line.split(": ") for line in text.strip().splitlines())}


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    build_standin_graph(d / "g.pb")
    ref = RNG.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    sample = (RNG.integers(0, 256, size=(36, 32, 32, 3)) * 0.9).astype(np.uint8)
    np.savez(d / "ref.npz", ref)
    np.savez_compressed(d / "sample.npz", arr_0=sample)
    out = run_evaluator(d / "ref.npz", d / "sample.npz", "--inception_graph", d / "g.pb", "--batch_size", 16,
                        "--output_file", d / "eval" / "out.txt", "--save_stats", d / "stats.npz")
    assert out.returncode == 0, out.stderr
    return d, ref, sample, out


def test_end_to_end_matches_library_on_independent_features(e2e):
    d, ref, sample, out = e2e
    results = parse((d / "eval" / "out.txt").read_text())
    assert list(results) == list(METRICS) and results == parse(out.stdout)
    ref_pool, ref_spatial, _ = standin_features(ref)
    pool, spatial, probs = standin_features(sample)
    r, s = evaluator.feature_statistics(ref_pool, ref_spatial), evaluator.feature_statistics(pool, spatial)
    expected = {
        "Inception Score": evaluator.inception_score(probs),
        "FID": evaluator.frechet_distance(s["mu"], s["sigma"], r["mu"], r["sigma"]),
        "sFID": evaluator.frechet_distance(s["mu_s"], s["sigma_s"], r["mu_s"], r["sigma_s"]),
    }
    expected["Precision"], expected["Recall"] = evaluator.precision_recall(ref_pool, pool)
    assert results == pytest.approx(expected, rel=1e-4)
    assert 0 < results["Precision"] < 1 and 0 < results["Recall"] < 1 and results["FID"] > 0.1
    saved = np.load(d / "stats.npz")
    assert sorted(saved.files) == ["mu", "mu_s", "pool", "sigma", "sigma_s"]
    np.testing.assert_allclose(saved["pool"], ref_pool, rtol=1e-4, atol=1e-4)


def test_saved_stats_as_ref_and_image_folder_as_sample(e2e):
    d, _, sample, out = e2e
    folder = d / "sample_images"
    folder.mkdir()
    for i, image in enumerate(sample):  # PNG and NPY files mixed
        if i % 2:
            np.save(folder / f"{i:03d}.npy", image)
        else:
            Image.fromarray(image).save(folder / f"{i:03d}.png")
    again = run_evaluator(d / "stats.npz", folder, "--inception_graph", d / "g.pb", "--batch_size", 5)
    assert again.returncode == 0, again.stderr
    assert parse(again.stdout) == pytest.approx(parse(out.stdout), rel=1e-6)


def test_graph_without_inception_ops_is_refused(e2e, tmp_path):
    (tmp_path / "junk.pb").write_bytes(b"\x00\x01 not a graph")
    with pytest.raises(evaluator.EvalError, match="junk.pb"):
        evaluator.read_graph_def(tmp_path / "junk.pb")
    assert evaluator.read_graph_def(e2e[0] / "g.pb").node


# ---------------------------------------------------------------- command errors


def _one_line_error(out, *fragments):
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("evaluator.py: error: ") and all(f in lines[0] for f in fragments), lines[0]


def test_missing_graph_offline(tmp_path):
    np.savez(tmp_path / "x.npz", np.zeros((4, 8, 8, 3), np.uint8))
    # a refusing proxy on loopback stands in for no network
    env = dict(os.environ, CHECKERBOARD_CACHE=str(tmp_path / "cache"), https_proxy="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")
    out = run_evaluator(tmp_path / "x.npz", tmp_path / "x.npz", env=env)
    _one_line_error(out, str(tmp_path / "cache" / evaluator.GRAPH_NAME), "--inception_graph")
    assert not list((tmp_path / "cache").iterdir())  # no partial download left behind
    _one_line_error(run_evaluator(tmp_path / "x.npz", tmp_path / "x.npz", "--inception_graph", tmp_path / "no.pb"),
                    "no.pb", "not found")


@pytest.mark.parametrize("content, fragments", [
    (None, ["missing.npz", "not found"]),
    (dict(images=np.zeros((4, 8, 8, 3), np.uint8)), ["no arr_0"]),
    (dict(arr_0=np.zeros((4, 8, 8, 3), np.float32)), ["uint8", "float32"]),
    (dict(arr_0=np.zeros((4, 3, 8, 8), np.uint8)), ["(N, H, W, 3)", "(4, 3, 8, 8)"]),
    (dict(arr_0=np.zeros((8, 8, 3), np.uint8)), ["(N, H, W, 3)"]),
])
def test_bad_batch_is_one_line(tmp_path, content, fragments):
    path = tmp_path / "missing.npz"
    if content is not None:
        np.savez(path, **content)
    good = tmp_path / "good.npz"
    np.savez(good, np.zeros((4, 8, 8, 3), np.uint8))
    _one_line_error(run_evaluator(good, path), *fragments)


def test_run_evaluator_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "run_evaluator.sh")], check=True)
