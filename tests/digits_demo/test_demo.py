"""demo.py end to end with tiny settings: every stage through the real code, report fields, figures,
reuse of finished stages, and one-line errors. (The 80% recognition is the full run's, not this one's.)"""
import json

import numpy as np
import pytest
import yaml
from PIL import Image

import demo
from digits_demo.config import REPO
from digits_demo.report import GRID_ZOOM, to_digit_pixels
# A few autoencoder steps, one generator epoch, one thread (no waiting on a busy second core).
TINY_ARGS = ["--ae_epochs", "0.1", "--ae_init_steps", "4", "--epochs", "1", "--threads", "1",
             "--samples_per_class", "2", "--no_progress"]


@pytest.fixture(scope="module")
def tiny_generator_config(tmp_path_factory):
    """configs/config_digits.yaml with a one-layer, narrow transformer and large batches."""
    document = yaml.safe_load((REPO / "configs" / "config_digits.yaml").read_text())
    document["model"]["llama_config"].update(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                             num_hidden_layers=1)
    document["args"].update(batch_size=128, log_freq=5)
    path = tmp_path_factory.mktemp("config") / "config_digits_tiny.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_generator_config):
    out = tmp_path_factory.mktemp("demo")
    argv = ["--output_dir", str(out), "--generator_config", str(tiny_generator_config), *TINY_ARGS]
    assert demo.main(argv) == 0
    return out, argv


def test_report_has_every_field(demo_run):
    out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    nll = report["heldout_nll"]
    assert list(nll["per_token_nats"]) == list(nll["top1_accuracy"]) == ["1", "2", "4", "8"]
    assert nll["num_images"] == 359  # 20% of scikit-learn's 1797 digits
    for value in [*nll["per_token_nats"].values(), nll["per_token_nats_all_scales"]]:
        assert 0 < value < np.log(128) * 2  # a finite cross entropy over the 128 codes
    cls = report["classifier"]
    assert cls["num_generated"] == 20 and cls["num_heldout_real"] == 359
    assert cls["heldout_real_accuracy"] > 0.9  # logistic regression on real 8x8 digits
    assert 0 <= cls["generated_accuracy"] <= 1
    assert sorted(cls["generated_accuracy_per_class"], key=int) == [str(c) for c in range(10)]
    assert set(report["seconds_per_stage"]) == {"data", "autoencoder", "generator", "sampling", "report"}
    assert report["reused_stages"] == [] and report["generator_epochs"] == 1
    assert report["seconds_this_run"] >= sum(report["seconds_per_stage"].values()) - 1
    assert all((out / name).is_file() for name in ("grid.png", "checkerboard_steps.png", "samples/samples.npz"))


def test_the_grid_has_a_row_per_class_and_the_steps_figure_a_column_per_step(demo_run):
    out, _ = demo_run
    grid = np.asarray(Image.open(out / "grid.png"))
    cell = 32 * GRID_ZOOM
    pad = 2 * GRID_ZOOM
    assert grid.shape[0] == 10 * cell + 9 * pad  # one row per class
    assert grid.shape[1] == 2 * cell + pad  # samples_per_class columns
    steps = Image.open(out / "checkerboard_steps.png")
    assert steps.width > steps.height  # one column per step (1 + 4 + 4 + 4)


def test_rerun_reuses_finished_stages(demo_run):
    out, argv = demo_run
    before = (out / "generator" / "checkpoint-last.pth").stat().st_mtime_ns
    assert demo.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["reused_stages"] == ["data", "autoencoder", "generator", "sampling"]
    assert (out / "generator" / "checkpoint-last.pth").stat().st_mtime_ns == before


def test_digit_pixels_invert_the_imagefolder(tmp_path):
    """Generated images are judged in sklearn's 8x8 0..16 range: the written real digits map back."""
    from sklearn.datasets import load_digits

    from common.digits import write_digits_imagefolder

    write_digits_imagefolder(tmp_path, 32)
    digits = load_digits()
    path = next((tmp_path / "train" / "3").glob("*.png"))
    pixels = to_digit_pixels(np.asarray(Image.open(path))[None])[0]
    original = digits.images[int(path.stem)]
    assert np.abs(pixels - original).mean() < 1.5


def _exit_code(argv) -> int:
    try:
        return demo.main(argv)
    except SystemExit as e:  # the one-line error of common/cli.py
        return e.code


def test_bad_config_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert _exit_code(["--output_dir", str(tmp_path / "d"), "--generator_config", str(missing)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"demo.py: error: config not found: {missing}"]


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_of_the_user_s_is_never_cleared(tmp_path, capsys):
    """--output_dir p with the user's p/data: refused in one line before anything is written or removed."""
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "train" / "mine.png").write_bytes(b"the user's")
    before = _files(tmp_path)
    assert _exit_code(["--output_dir", str(tmp_path), *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "it is not the demo's output folder" in err and str(tmp_path / "data") in err, err
    assert _files(tmp_path) == before


def test_a_damaged_stage_record_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "stages.json").write_text("{broken")
    before = _files(tmp_path)
    assert _exit_code(["--output_dir", str(tmp_path), *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'stages.json'} is not valid JSON" in err, err
    assert _files(tmp_path) == before


def test_a_stage_run_again_removes_only_what_it_wrote(demo_run, capsys):
    """Other sampling settings re-run the sampling stage; a file the stage did not write stops it
    first, and once it is gone the stage's own files (only those) are replaced."""
    out, argv = demo_run
    mine = out / "samples" / "notes.txt"
    mine.write_text("the user's")
    before = _files(out)
    assert _exit_code([*argv, "--cfg", "1.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{mine} was not written by the demo's 'sampling' stage" in err, err
    assert _files(out) == before
    mine.unlink()
    assert demo.main([*argv, "--cfg", "1.0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["reused_stages"] == ["data", "autoencoder", "generator"] and report["sampling"]["cfg"] == 1.0
    assert demo.main(argv) == 0  # back to the fixture's settings for the other tests


def test_an_interrupted_stage_run_again_removes_only_what_it_wrote(demo_run, capsys, monkeypatch):
    """Issue 23: rerunning an unfinished stage deleted, without a word, a file the user had put in its folder
    (an interrupted stage had no list of its files). Its journal lists them now: the user's file stops the
    demo in one line with nothing changed, and once it is gone the stage's own files are replaced."""
    from digits_demo import pipeline

    out, argv = demo_run
    real = pipeline.sample_digits

    def killed_after_sampling(*args):
        real(*args)
        raise KeyboardInterrupt  # as a kill ends it: the stage stays unfinished

    monkeypatch.setattr(pipeline, "sample_digits", killed_after_sampling)
    with pytest.raises(KeyboardInterrupt):
        demo.main([*argv, "--cfg", "0.5"])
    monkeypatch.setattr(pipeline, "sample_digits", real)
    assert json.loads((out / "stages.json").read_text())["sampling"]["finished"] is False
    mine = out / "samples" / "notes.txt"
    mine.write_text("the user's")
    before = _files(out)
    capsys.readouterr()
    assert _exit_code(argv) == 2  # the fixture's settings: the unfinished stage must run again
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{mine} was not written by the demo's 'sampling' stage" in err, err
    assert "Traceback" not in err and _files(out) == before
    mine.unlink()
    assert demo.main(argv) == 0
    assert json.loads((out / "stages.json").read_text())["sampling"]["finished"] is True


def test_every_file_a_stage_wrote_is_in_its_journal(demo_run):
    """The writers that do not go through common/files.py (the digits' images, the training logs, TensorBoard)
    list their files too: a stage's folder holds nothing its journal does not."""
    from common.files import journaled
    from digits_demo.stages import files_under

    out, _ = demo_run
    for stage, folder in (("data", "data"), ("autoencoder", "autoenc"), ("generator", "generator"),
                          ("sampling", "samples")):
        unlisted = set(files_under(out / folder)) - set(journaled(out / f".{stage}.journal"))
        assert not unlisted, (stage, sorted(unlisted))


# ---------------------------------------------------------------- the scale-ratio study (demo.py --study)
STUDY_ARGS = ["--study", "--study_models", "2,single", "--study_cfg", "0:1:1", "--study_steps", "1,2",
              "--study_single_steps", "4,8", "--study_samples", "20", "--study_noise_seeds", "1",
              "--study_training_seeds", "1"]


@pytest.fixture(scope="module")
def study_run(demo_run):
    """The study in the demo's folder: the demo's data, autoencoder and (ratio 2) generator reused."""
    out, argv = demo_run
    assert demo.main([*argv, *STUDY_ARGS]) == 0
    return out, [*argv, *STUDY_ARGS]


def test_the_study_sweeps_every_generator(study_run):
    from sweep import results as sr

    out, _ = study_run
    report = json.loads((out / "study_report.json").read_text())
    assert report["reused_stages"] == ["data", "autoencoder", "generator"]
    assert [m["name"] for m in report["models"]] == ["2", "single"]
    assert [m["scale_sizes"] for m in report["models"]] == [[1, 2, 4, 8], [8]]
    assert [m["stage"] for m in report["models"]] == ["generator", "generator_single"]
    rows = sr.read_rows(out / "study")
    assert [(r["ratio"], r["steps_per_scale"], r["total_steps"], r["cfg"]) for r in rows] == [
        (2, 1, 4, 0.0), (2, 1, 4, 1.0), (2, 2, 7, 0.0), (2, 2, 7, 1.0),
        ("single", 4, 4, 0.0), ("single", 4, 4, 1.0), ("single", 8, 8, 0.0), ("single", 8, 8, 1.0)]
    assert all(r["num_samples"] == 20 and r["temperature"] == 1.0 and r["cfg_start_step"] == 1 for r in rows)
    assert all(set(r) >= {"digits_fid", "digits_is", "digits_precision"} and "fid" not in r for r in rows)
    assert [(b["steps_per_scale"], b["runs"]) for b in report["best"]] == [(1, 2), (2, 2), (4, 2), (8, 2)]
    best = min((r for r in rows if r["ratio"] == 2), key=lambda r: r["digits_fid"])
    assert report["noise"]["point"]["cfg"] == best["cfg"] and list(report["noise"]["digits_fid_by_seed"]) == ["0", "1"]
    assert report["noise"]["digits_fid_by_seed"]["0"] == best["digits_fid"]
    training = report["training_seeds"]
    assert list(training) == ["2", "single"] and all(list(t["by_training_seed"]) == ["0", "1"] for t in training.values())
    assert training["2"]["point"]["cfg"] == best["cfg"] and training["2"]["by_training_seed"]["0"]["digits_fid"] == \
        best["digits_fid"]
    nlls = [e["heldout_nll"] for e in training["2"]["by_training_seed"].values()]
    assert nlls[0] != nlls[1] and training["2"]["heldout_nll"]["min"] == min(nlls)  # another seed, another model
    assert report["real_heldout"]["num_images"] == 359 and report["real_heldout"]["reference_images"] == 1438
    for name in report["files"].values():
        assert (out / "study" / name.split("/")[-1]).is_file()
    assert "Digits FID" in (out / "study" / "best_guidance.md").read_text()


def test_the_study_reuses_its_finished_stages(study_run):
    out, argv = study_run
    before = (out / "study" / "results.json").stat().st_mtime_ns
    assert demo.main(argv) == 0
    report = json.loads((out / "study_report.json").read_text())
    assert report["reused_stages"] == ["data", "autoencoder", "generator", "generator_single", "study_reference",
                                       "study", "study_noise", "study_training"]
    assert (out / "study" / "results.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("extra, fragments", [
    (["--study_models", "2,4"], ["--study_models 4:", "zero-size scale"]),  # 8 -> 2 -> 0.5: no 8x8 ratio 4
    (["--study_models", "2,x"], ["--study_models: scale_ratio: cannot read 'x'"]),
    (["--study_samples", "25"], ["--study_samples 25 is not a multiple of the 10 classes"]),
    (["--study_steps", "1/2"], ["--study_models 2:", "steps_per_scale has 2 entries but the model has 4 scales"]),
    (["--study_cfg", "1:0:0.5"], ["--study_cfg: '1:0:0.5' ends below its start"]),
    (["--img_size", "16"], ["--study scores digits with the digits feature network, which reads 32 px"]),
])
def test_a_bad_study_value_is_one_line_before_any_stage(demo_run, capsys, extra, fragments):
    out, argv = demo_run
    before = _files(out)
    assert _exit_code([*argv, *STUDY_ARGS, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(f in err for f in fragments), err
    assert _files(out) == before
