"""evaluator.py: the whole TensorFlow path on a stand-in Inception graph built here, against the
statistics computed from the graph's features in numpy, and the one-line command errors."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from standin_inception import build_standin_graph, standin_features
from evaluation import statistics
from evaluation.batches import EvalError, open_batch
from evaluation.inception import GRAPH_NAME, read_graph_def

RNG = np.random.default_rng(0)
METRICS = ("Inception Score", "FID", "sFID", "Precision", "Recall")


# ---------------------------------------------------------------- end to end through TensorFlow


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
    r, s = statistics.feature_statistics(ref_pool, ref_spatial), statistics.feature_statistics(pool, spatial)
    expected = {
        "Inception Score": statistics.inception_score(probs),
        "FID": statistics.frechet_distance(s["mu"], s["sigma"], r["mu"], r["sigma"]),
        "sFID": statistics.frechet_distance(s["mu_s"], s["sigma_s"], r["mu_s"], r["sigma_s"]),
    }
    expected["Precision"], expected["Recall"] = statistics.precision_recall(ref_pool, pool)
    assert results == pytest.approx(expected, rel=1e-4)
    assert 0 < results["Precision"] < 1 and 0 < results["Recall"] < 1 and results["FID"] > 0.1
    saved = np.load(d / "stats.npz")
    assert sorted(saved.files) == ["features", "features_identity", "image_shape", "mu", "mu_s", "pool", "radii",
                                   "radii_arithmetic", "sigma", "sigma_s"]
    assert str(saved["features"]) == "inception" and list(saved["image_shape"]) == [32, 32]
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
    with pytest.raises(EvalError, match="junk.pb"):
        read_graph_def(tmp_path / "junk.pb")
    assert read_graph_def(e2e[0] / "g.pb").node


# ---------------------------------------------------------------- command errors


def _one_line_error(out, *fragments):
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("evaluator.py: error: ") and all(f in lines[0] for f in fragments), lines[0]


def test_a_missing_inception_graph_offline_is_one_line_and_leaves_no_partial_file(tmp_path):
    np.savez(tmp_path / "x.npz", np.zeros((4, 8, 8, 3), np.uint8))
    # a refusing proxy on loopback stands in for no network
    env = dict(os.environ, CHECKERBOARD_CACHE=str(tmp_path / "cache"), https_proxy="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")
    out = run_evaluator(tmp_path / "x.npz", tmp_path / "x.npz", env=env)
    _one_line_error(out, str(tmp_path / "cache" / GRAPH_NAME), "--inception_graph")
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


# ---------------------------------------------------------------- issue 17: refused before anything changes


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(folder, args, *fragments, env=None, streaming=False):
    """One line naming the problem, exit 2, no traceback, and no file under `folder` made or changed.
    `streaming`: found while images stream through the network, after its progress bars."""
    before = snapshot(folder)
    out = run_evaluator(*args, env=env)
    if streaming:
        errors = [line for line in out.stderr.splitlines() if line.startswith("evaluator.py:")]
        assert out.returncode == 2 and errors == [out.stderr.strip().splitlines()[-1]], out.stderr
        assert errors[0].startswith("evaluator.py: error: ") and all(f in errors[0] for f in fragments), errors
    else:
        _one_line_error(out, *fragments)
    assert "Traceback" not in out.stderr + out.stdout
    assert snapshot(folder) == before


def offline(tmp_path):
    """No Inception graph can be found or downloaded: what is refused here is refused before it is needed."""
    return dict(os.environ, CHECKERBOARD_CACHE=str(tmp_path / "no_cache"), https_proxy="http://127.0.0.1:9",
                HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")


def _images(n, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_outputs_never_overwrite_a_file(tmp_path):
    np.savez(tmp_path / "ref.npz", _images(6))
    np.savez(tmp_path / "sample.npz", _images(6, seed=1))
    (tmp_path / "old.txt").write_text("earlier results\n")
    env = offline(tmp_path)
    # the issue: --save_stats naming the sample batch replaced it with statistics
    _refused(tmp_path, [tmp_path / "ref.npz", tmp_path / "sample.npz", "--save_stats", tmp_path / "sample.npz"],
             "--save_stats", str(tmp_path / "sample.npz"), "exists", env=env)
    _refused(tmp_path, [tmp_path / "ref.npz", tmp_path / "sample.npz", "--output_file", tmp_path / "old.txt"],
             "--output_file", str(tmp_path / "old.txt"), "exists", env=env)
    _refused(tmp_path, [tmp_path / "ref.npz", tmp_path / "sample.npz", "--output_file", tmp_path / "new.npz",
                        "--save_stats", tmp_path / "new.npz"], "same file", "new.npz", env=env)
    _refused(tmp_path, [tmp_path / "ref.npz", tmp_path / "sample.npz", "--reference_cache", tmp_path / "old.txt"],
             "--reference_cache", "is a file", env=env)


def test_resolutions_of_ref_and_sample_are_compared(tmp_path):
    np.savez(tmp_path / "ref.npz", _images(6, size=16))
    np.savez(tmp_path / "sample.npz", _images(6, size=8))
    _refused(tmp_path, [tmp_path / "ref.npz", tmp_path / "sample.npz", "--output_file", tmp_path / "out.txt"],
             str(tmp_path / "ref.npz"), "16x16", str(tmp_path / "sample.npz"), "8x8", env=offline(tmp_path))


def test_fewer_than_four_images_and_batch_size_zero(tmp_path):
    np.savez(tmp_path / "ref.npz", _images(6))
    np.savez(tmp_path / "three.npz", _images(3))
    folder = tmp_path / "three"
    folder.mkdir()
    for i, image in enumerate(_images(3)):
        Image.fromarray(image).save(folder / f"{i}.png")
    env = offline(tmp_path)
    _refused(tmp_path, [tmp_path / "ref.npz", tmp_path / "three.npz"], "three.npz", "holds 3 images", "at least 4",
             env=env)
    _refused(tmp_path, [folder, tmp_path / "ref.npz"], str(folder), "holds 3 images", env=env)
    _refused(tmp_path, [tmp_path / "ref.npz", tmp_path / "ref.npz", "--batch_size", "0"], "--batch_size", "got 0",
             env=env)


def test_an_old_statistics_file_without_image_size_is_refused(tmp_path):
    pool = np.random.default_rng(0).normal(size=(6, 4))
    np.savez(tmp_path / "old_stats.npz", pool=pool, mu=pool.mean(0), sigma=np.cov(pool, rowvar=False),
             mu_s=pool.mean(0), sigma_s=np.cov(pool, rowvar=False))
    np.savez(tmp_path / "sample.npz", _images(6))
    _refused(tmp_path, [tmp_path / "old_stats.npz", tmp_path / "sample.npz"], "old_stats.npz", "image size",
             "--save_stats", env=offline(tmp_path))


def test_unreadable_files_in_a_folder(e2e, tmp_path):
    """A corrupt PNG or a .npy of Python objects: first in the folder (found when it is opened) or
    later (found while the images stream through the network)."""
    d, ref, sample, _ = e2e
    np.savez(tmp_path / "ref.npz", ref)
    good = Image.fromarray(sample[0])
    for position, kind in ((0, "png"), (0, "npy"), (5, "png"), (5, "npy")):
        folder = tmp_path / f"{kind}{position}"
        folder.mkdir()
        for i in range(7):
            good.save(folder / f"{i:03d}.png")
        bad = folder / f"{position:03d}.{kind}"
        if kind == "png":
            bad.write_bytes(bad.read_bytes()[:60])  # cut short
        else:
            bad.with_suffix(".png").unlink()
            np.save(bad, np.array([{"pixels": 1}] * 3, dtype=object), allow_pickle=True)
        fragment = "cannot read the image" if kind == "png" else "Object arrays"
        if (position, kind) == (5, "npy"):  # the same path as the PNG's below, without a second TensorFlow start
            with pytest.raises(EvalError, match=f"{bad}: cannot read the array .*{fragment}"):
                list(open_batch(folder).read(2))
            continue
        _refused(tmp_path, [tmp_path / "ref.npz", folder, "--inception_graph", d / "g.pb", "--batch_size", 2,
                            "--output_file", tmp_path / "out.txt", "--save_stats", tmp_path / "s.npz"],
                 str(bad), fragment, streaming=position > 0)


def test_inception_graph_is_for_inception_features(tmp_path):
    np.savez(tmp_path / "ref.npz", _images(6, size=32))
    _refused(tmp_path, [tmp_path / "ref.npz", tmp_path / "ref.npz", "--features", "digits", "--inception_graph",
                        tmp_path / "g.pb"], "--inception_graph", "digits", env=offline(tmp_path))
    _refused(tmp_path, [tmp_path / "ref.npz", tmp_path / "ref.npz", "--features", "alexnet"], "--features",
             "alexnet", env=offline(tmp_path))


def test_run_evaluator_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "run_evaluator.sh")], check=True)


def test_run_evaluator_script_refuses_an_evaluated_setting_before_sampling(tmp_path):
    # a copy runs in tmp_path (the script works from its own folder); torchrun is never reached
    script = tmp_path / "run_evaluator.sh"
    script.write_text((REPO / "run_evaluator.sh").read_text())
    (tmp_path / "eval").mkdir()
    done = tmp_path / "eval" / "M_cfg2.0_start5_steps4_eval.txt"
    done.write_text("FID: 3.0\n")
    env = dict(os.environ, CKPT="x/M", CFG="2.0", NPROC="1", PATH="/usr/bin:/bin")
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr == (f"run_evaluator.sh: error: eval/{done.name} exists (this setting was "
                                                  f"evaluated); move it away to evaluate again\n")
    assert done.read_text() == "FID: 3.0\n" and sorted(p.name for p in tmp_path.iterdir()) == ["eval",
                                                                                                "run_evaluator.sh"]


def test_two_evaluations_into_one_output_file_keep_the_first_ones_results(tmp_path, capfd, monkeypatch):
    """Issue 23: two `evaluator.py ... --output_file F` started half a second apart both exited 0, F holding
    the first one's results only (F was checked to be new at the start, then replaced at the end). Here the
    other run writes F while this one evaluates: this one is refused with one line and F stays the other's."""
    import evaluator
    from cli_check import assert_one_line_error, run_main

    np.savez(tmp_path / "ref.npz", _images(6))
    np.savez(tmp_path / "sample.npz", _images(6, seed=1))
    target = tmp_path / "F.txt"

    def the_other_run_finishes_meanwhile(*args):
        target.write_text("FID: 1.5\n")
        return {"fid": 2.5}

    monkeypatch.setattr(evaluator, "evaluate", the_other_run_finishes_meanwhile)
    result = run_main(evaluator.main, [tmp_path / "ref.npz", tmp_path / "sample.npz", "--output_file", target], capfd)
    assert_one_line_error(result, "evaluator.py", f"--output_file {target} exists")
    assert result.out == "FID: 2.5\n"  # this run's results, printed before the refusal
    assert target.read_text() == "FID: 1.5\n"
    assert sorted(os.listdir(tmp_path)) == ["F.txt", "ref.npz", "sample.npz"]


def test_save_stats_made_meanwhile_is_kept(tmp_path):
    from evaluation.reference import FeatureSet, save_statistics

    pool = RNG.normal(size=(8, 4)).astype(np.float32)
    stats = {"mu": pool.mean(0), "sigma": np.cov(pool.T), "mu_s": pool.mean(0), "sigma_s": np.cov(pool.T)}
    target = tmp_path / "stats.npz"
    target.write_bytes(b"another run's statistics")
    with pytest.raises(ValueError, match=f"--save_stats {target} exists"):
        save_statistics(target, FeatureSet(pool, stats, (8, 8), "inception", None), new_file_option="--save_stats")
    assert target.read_bytes() == b"another run's statistics" and os.listdir(tmp_path) == ["stats.npz"]
