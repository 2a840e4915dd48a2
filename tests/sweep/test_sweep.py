"""The guidance sweep (sweep/, main_sweep.py) on the tiny_2x fixture with the stand-in Inception graph:
the grid from its text, rows equal to the evaluator's metrics of each point's samples, the tables and
plots, an interrupted sweep that continues without drawing a point again, one sweep per folder,
a grid that grows, refusals before anything is written, and two processes under torchrun."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import main_sweep
from conftest import REPO
from evaluation import load_features, statistics
from standin_inception import build_standin_graph, standin_features
from sweep import report
from sweep import results as sr
from sweep import run as sweep_run
from sweep.config import SweepConfig
from sweep.grid import cfg_values, steps_settings
from sweep.run import run_sweep

PNG = b"\x89PNG\r\n\x1a\n"
REPORT_FILES = (sr.RESULTS_JSON, sr.RESULTS_CSV, report.BEST_MD, report.BEST_CSV, report.FID_VS_IS,
                report.BY_STEPS_PER_SCALE, report.BY_TOTAL_STEPS)


# ---------------------------------------------------------------- the grid from its text


def test_a_guidance_range_is_inclusive_and_float_safe():
    assert cfg_values(["1.0:2.0:0.1"]) == [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0]
    assert cfg_values(["0:1.5:0.25"]) == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    assert cfg_values(["1:2:0.3"]) == [1.0, 1.3, 1.6, 1.9]  # 2.0 is not on the step
    assert cfg_values(["2.0", "1.25", "1.5", "1.0:1.5:0.25"]) == [1.0, 1.25, 1.5, 2.0]  # sorted, each once
    assert cfg_values([1.5, 2]) == [1.5, 2.0]  # numbers in code
    for text, fragment in (("2:1:0.1", "ends below its start"), ("1:2:0", "step of '1:2:0' must be > 0"),
                           ("1:2", "is no range"), ("a:2:0.1", "'a' is not a number"), ("-1", ">= 0"),
                           ("0:1:0.0001", "more than 1000"), ("nan", "not a finite number")):
        with pytest.raises(ValueError, match=fragment):
            cfg_values([text])


def test_steps_settings_are_numbers_or_per_scale_lists():
    assert steps_settings(["2", "4", "8"]) == [2, 4, 8]
    assert steps_settings(["1/4/4/4", "4", "4"]) == [(1, 4, 4, 4), 4]
    for bad in ("0", "x", "1/0/4", "1.5"):
        with pytest.raises(ValueError, match="--steps_per_scale"):
            steps_settings([bad])


# ---------------------------------------------------------------- a sweep in-process


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """The stand-in Inception graph, loaded once, and a reference batch of 32 px images."""
    d = tmp_path_factory.mktemp("standin")
    build_standin_graph(d / "g.pb")
    reference = np.random.default_rng(0).integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    np.savez(d / "ref.npz", reference)
    return d, load_features("inception", d / "g.pb"), reference


def sweep_config(standin, out, **kw):
    d, _, _ = standin
    values = dict(checkpoint=[str(REPO / "tests" / "fixtures" / "tiny_2x")], reference=str(d / "ref.npz"),
                  output_dir=str(out), cfg=["1.0", "2.0"], steps_per_scale=["2", "4"], num_samples=20,
                  shard_size=10, batch_size=10, eval_batch_size=16, device="cpu")
    return SweepConfig(**{**values, **kw})


def expected_metrics(reference, samples_npz) -> dict:
    """The five metrics from the stand-in graph's features in numpy, independent of the evaluator."""
    with np.load(samples_npz) as data:
        images = data["arr_0"]
    ref_pool, ref_spatial, _ = standin_features(reference)
    pool, spatial, probs = standin_features(images)
    r, s = statistics.feature_statistics(ref_pool, ref_spatial), statistics.feature_statistics(pool, spatial)
    precision, recall = statistics.precision_recall(ref_pool, pool)
    return {"inception_score": statistics.inception_score(probs),
            "fid": statistics.frechet_distance(s["mu"], s["sigma"], r["mu"], r["sigma"]),
            "sfid": statistics.frechet_distance(s["mu_s"], s["sigma_s"], r["mu_s"], r["sigma_s"]),
            "precision": precision, "recall": recall}


@pytest.fixture(scope="module")
def finished(standin, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    outputs = run_sweep(sweep_config(standin, out, confirm=30), network=standin[1])
    return out, outputs


def test_a_sweep_writes_a_row_per_point_and_the_report(standin, finished):
    out, outputs = finished
    rows = sr.read_rows(out)
    search = [(r["steps_per_scale"], r["total_steps"], r["cfg"]) for r in rows if r["num_samples"] == 20]
    assert search == [(2, 7, 1.0), (2, 7, 2.0), (4, 13, 1.0), (4, 13, 2.0)]  # ratio 2: 1 + 3 x steps
    assert len(outputs.evaluated) == 6 and not outputs.skipped and not outputs.stopped
    for row in rows:
        assert row["checkpoint"] == str(REPO / "tests" / "fixtures" / "tiny_2x") and row["ratio"] == 2
        assert (row["cfg_start_step"], row["temperature"]) == (5, 1.0) and row["seconds"] > 0
        point = out / row["samples"]
        record = json.loads((point / "sampling.json").read_text())
        assert (record["cfg"], record["num_samples"], record["label_mode"]) == (row["cfg"], row["num_samples"],
                                                                                "balanced")
        assert record["steps_per_scale"] == [row["steps_per_scale"]] * 4
        assert {k: row[k] for k in expected_metrics(standin[2], point / "samples.npz")} == pytest.approx(
            expected_metrics(standin[2], point / "samples.npz"), rel=1e-4, abs=1e-6)
    with open(out / sr.RESULTS_CSV) as f:
        assert f.readline().strip().split(",")[:len(sr.RUN_COLUMNS)] == list(sr.RUN_COLUMNS)
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    for name in (report.FID_VS_IS, report.BY_STEPS_PER_SCALE, report.BY_TOTAL_STEPS):
        assert (out / name).read_bytes()[:8] == PNG
    assert "Best guidance per setting (lowest FID" in (out / report.BEST_MD).read_text()


def test_confirm_draws_each_setting_s_best_guidance_again(finished):
    out, _ = finished
    rows = sr.read_rows(out)
    for steps in (2, 4):
        search = [r for r in rows if r["steps_per_scale"] == steps and r["num_samples"] == 20]
        (confirm,) = [r for r in rows if r["steps_per_scale"] == steps and r["num_samples"] == 30]
        assert confirm["cfg"] == min(search, key=lambda r: r["fid"])["cfg"]
    best = sr.best_per_setting(rows, "inception")
    assert [(b["steps_per_scale"], b["num_samples"], b["runs"]) for b in best] == [(2, 20, 2), (4, 20, 2), (2, 30, 1),
                                                                                  (4, 30, 1)]


def _state(out):
    """Every point's samples.npz: its inode and modification time (drawn again: both change)."""
    return {str(p.parent.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted((out / "points").rglob("samples.npz"))}


def test_an_interrupted_sweep_continues_without_drawing_a_point_again(standin, tmp_path, monkeypatch, finished):
    """Killed while the second point is evaluated (its samples drawn): the rerun keeps the first
    point's row and samples, evaluates the second without drawing it, and draws the other two."""
    calls = []
    real = sweep_run.evaluate_samples

    def dies_on_the_second(*args, **kw):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill would end it, past anything the sweep could catch
        return real(*args, **kw)

    monkeypatch.setattr(sweep_run, "evaluate_samples", dies_on_the_second)
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep_config(standin, out), network=standin[1])
    first = sr.read_rows(out)
    assert len(first) == 1 and len(_state(out)) == 2
    before = _state(out)
    drawn = []
    real_sample = sweep_run.sample
    monkeypatch.setattr(sweep_run, "sample", lambda config, **kw: drawn.append(config.output_dir) or
                        real_sample(config, **kw))
    outputs = run_sweep(sweep_config(standin, out), network=standin[1])
    rows = sr.read_rows(out)
    assert rows[0] == first[0] and len(rows) == 4 and len(outputs.skipped) == 1 and len(outputs.evaluated) == 3
    assert str(out / first[0]["samples"]) not in drawn  # the evaluated point is not even opened
    after = _state(out)
    assert all(after[k] == v for k, v in before.items())  # neither finished point was drawn again
    assert sorted(r["samples"] for r in rows) == sorted(after)
    # the same points as the uninterrupted sweep, the same numbers
    done, _ = finished
    full = {r["samples"]: r for r in sr.read_rows(done) if r["num_samples"] == 20}
    # 20 samples give singular covariances, whose matrix square root turns float-level differences in
    # the features between the two runs into ~1e-5 of the FID (seen: 1.6e-4 of 17.75).
    for row in rows:
        assert {k: row[k] for k in ("fid", "inception_score")} == pytest.approx(
            {k: full[row["samples"]][k] for k in ("fid", "inception_score")}, rel=1e-4)


def test_max_points_stops_and_a_grid_that_grows_adds_only_its_new_points(standin, tmp_path):
    out = tmp_path / "s"
    stopped = run_sweep(sweep_config(standin, out, cfg=["1.0"], max_points=1), network=standin[1])
    assert stopped.stopped and len(stopped.evaluated) == 1 and len(sr.read_rows(out)) == 1
    # the same model twice, and 2 as one value or per scale, are one point each
    tiny = str(REPO / "tests" / "fixtures" / "tiny_2x")
    grown = run_sweep(sweep_config(standin, out, checkpoint=[tiny, tiny + "/"], cfg=["1.0:2.0:0.5"],
                                   steps_per_scale=["2", "2/2/2/2"]), network=standin[1])
    assert len(grown.skipped) == 1 and [p.cfg for p in grown.evaluated] == [1.5, 2.0]
    record = json.loads((out / "sweep.json").read_text())
    assert [g["cfg"] for g in record["grids"]] == [[1.0], [1.0, 1.5, 2.0]] and len(record["checkpoints"]) == 1
    assert [(r["steps_per_scale"], r["cfg"]) for r in sr.read_rows(out)] == [(2, 1.0), (2, 1.5), (2, 2.0)]


def test_the_points_of_a_model_share_one_sampler(standin, tmp_path, monkeypatch):
    """A Sampler's compiled steps and CUDA graphs are built per Sampler: one per model, not per point."""
    from models.sampler import Sampler
    made = []
    init = Sampler.__init__
    monkeypatch.setattr(Sampler, "__init__", lambda self, *a, **k: (made.append(self), init(self, *a, **k))[1])
    outputs = run_sweep(sweep_config(standin, tmp_path / "s", steps_per_scale=["2"]), network=standin[1])
    assert len(outputs.evaluated) == 2 and len(made) == 1


def test_keep_samples_off_removes_each_point_s_samples_after_its_row(standin, tmp_path):
    out = tmp_path / "s"
    run_sweep(sweep_config(standin, out, cfg=["1.0"], steps_per_scale=["2"], keep_samples=False), network=standin[1])
    (row,) = sr.read_rows(out)
    point = out / row["samples"]
    assert not (point / "samples.npz").exists() and (point / "grid.png").is_file()
    again = run_sweep(sweep_config(standin, out, cfg=["1.0"], steps_per_scale=["2"], keep_samples=False),
                      network=standin[1])
    assert len(again.skipped) == 1 and not again.evaluated and not (point / "samples.npz").exists()


# ---------------------------------------------------------------- refusals, through the command line


def run_main(argv, capsys):
    try:
        rc = main_sweep.main([str(a) for a in argv])
    except SystemExit as e:  # the one-line error of common/cli.py
        rc = e.code
    return rc, capsys.readouterr().err


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def base_argv(standin, out, *extra):
    d, _, _ = standin
    return ["--checkpoint", REPO / "tests" / "fixtures" / "tiny_2x", "--reference", d / "ref.npz", "--inception_graph",
            d / "g.pb", "--output_dir", out, "--cfg", "1.0", "--steps_per_scale", "2", "--num_samples", 20,
            "--device", "cpu", *extra]


@pytest.mark.parametrize("extra, fragment", [
    (["--cfg", "2:1:0.1"], "--cfg: '2:1:0.1' ends below its start"),
    (["--steps_per_scale", "1/2/4"], "steps_per_scale has 3 entries but the model has 4 scales"),
    (["--num_samples", "25"], "--num_samples 25 is not a multiple of the model's 10 classes"),
    (["--confirm", "20"], "--confirm 20 must be larger than --num_samples 20"),
    (["--use_ema"], "no model_ema weights"),
    (["--features", "digits", "--inception_graph", "g.pb"], "--inception_graph is for --features inception"),
    (["--cfg", "1e39"], "--cfg: guidance weights must be at most 3.403e+38 (the largest float32, which it is used "
                        "as), got 1e+39"),
    (["--temperature", "1e-45"], "--temperature must be 0 or at least 1.175e-38 (the smallest normal float32, "
                                 "which it is used as), got 1e-45"),
    (["--cfg", "0,1", "--cfg_start_step", "7"], "cfg_start_step 7 is at or beyond the last step: these steps per "
                                                "scale sample 7 steps (0..6), so cfg 1 would guide none of them"),
])
def test_a_bad_value_is_one_line_before_anything_is_written(standin, tmp_path, capsys, extra, fragment):
    out = tmp_path / "s"
    rc, err = run_main([*base_argv(standin, out), *extra], capsys)
    assert rc == 2 and err.count("\n") == 1 and fragment in err and err.startswith("main_sweep.py: error: "), err
    assert not out.exists()


def test_another_sweep_s_folder_is_refused_and_left_as_it_was(standin, tmp_path, capsys):
    out = tmp_path / "s"
    assert run_main(base_argv(standin, out), capsys)[0] == 0
    before = _files(out)
    for extra, fragment in ((["--temperature", "0.5"], "temperature=1.0, this command has temperature=0.5"),
                            (["--seed", "3"], "seed=0, this command has seed=3"),
                            (["--cfg_start_step", "1"], "cfg_start_step=5"),
                            (["--precision", "bf16"], "precision='fp32'")):
        rc, err = run_main([*base_argv(standin, out), *extra], capsys)
        assert rc == 2 and err.count("\n") == 1 and fragment in err and "sweep.json" in err, err
        assert _files(out) == before
    # another reference
    other = tmp_path / "other_ref.npz"
    np.savez(other, np.zeros((8, 32, 32, 3), np.uint8))
    argv = base_argv(standin, out)
    argv[argv.index("--reference") + 1] = other
    rc, err = run_main(argv, capsys)
    assert rc == 2 and "reference_sha256" in err and _files(out) == before


def test_a_changed_checkpoint_is_refused(standin, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(REPO / "tests" / "fixtures" / "tiny_2x", model)
    out = tmp_path / "s"
    argv = base_argv(standin, out)
    argv[argv.index("--checkpoint") + 1] = model
    assert run_main(argv, capsys)[0] == 0
    before = _files(out)
    with open(model / "checkpoint-last.pth", "ab") as f:
        f.write(b"\0")  # other bytes: as a further epoch's checkpoint would be
    rc, err = run_main(argv, capsys)
    assert rc == 2 and "has changed since this sweep evaluated it" in err and _files(out) == before


def test_a_folder_of_no_sweep_and_a_reference_of_another_size_are_refused(standin, tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "results.csv").write_text("the user's\n")
    rc, err = run_main(base_argv(standin, out), capsys)
    assert rc == 2 and "results.csv is there but no sweep.json" in err
    assert _files(out) == {"results.csv": b"the user's\n"}
    big = tmp_path / "ref64.npz"
    np.savez(big, np.zeros((8, 64, 64, 3), np.uint8))
    argv = base_argv(standin, tmp_path / "new")
    argv[argv.index("--reference") + 1] = big
    rc, err = run_main(argv, capsys)
    assert rc == 2 and "holds 64x64 images but" in err and not (tmp_path / "new").exists()


# ---------------------------------------------------------------- subprocesses: a kill, torchrun


def _script(*argv, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, *map(str, argv)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_a_killed_sweep_command_continues_where_it_stopped(standin, tmp_path, capsys):
    """SIGKILL once the first row is written; the same command then finishes the grid without
    drawing an evaluated point again."""
    out = tmp_path / "s"
    argv = base_argv(standin, out, "--cfg", "0.5,1.0,1.5,2.0", "--shard_size", "10")
    proc = _script(REPO / "main_sweep.py", *argv)
    deadline = time.time() + 120
    while not (out / sr.RESULTS_JSON).is_file():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    rows = sr.read_rows(out)
    assert 1 <= len(rows) < 4, "the sweep finished before it was killed"
    before = _state(out)
    rc, _ = run_main(argv, capsys)  # the same command, here in-process
    assert rc == 0
    after = sr.read_rows(out)
    assert after[:len(rows)] == rows and len(after) == 4 and len({r["cfg"] for r in after}) == 4
    assert all(_state(out)[k] == v for k, v in before.items() if k in {r["samples"] for r in rows})
    assert not list(out.rglob(".*.tmp")) and not (out / ".run.lock").exists()


def test_two_processes_under_torchrun_give_the_single_process_rows(standin, tmp_path, finished):
    argv = base_argv(standin, tmp_path / "two", "--cfg", "1.0,2.0", "--steps_per_scale", "2", "--shard_size", "5",
                     "--batch_size", "3")
    proc = _script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", REPO / "main_sweep.py",
                   *argv)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert stdout.count("rows in") == 1  # process 0 reports
    two = sr.read_rows(tmp_path / "two")
    done, _ = finished
    one = {r["samples"]: r for r in sr.read_rows(done)}
    assert [r["cfg"] for r in two] == [1.0, 2.0]
    for row in two:  # batch sizes move a pixel by a level at most (tests/sampling/test_sample.py)
        assert row["fid"] == pytest.approx(one[row["samples"]]["fid"], rel=0.02)
