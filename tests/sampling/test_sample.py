"""Sampling (sampling/ and main_sample.py) on the tiny_2x fixture: parity, reproducibility, resumable FID
runs, finished runs, one run per folder, errors."""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import main_sample
from conftest import dead_pid
from models import build_generator, load_model
from models.checkpoint_format import read_config
from sampling import sample_io
from sampling.config import SampleConfig
from sampling.flops import flops_per_sample
from sampling.plan import plan_for
from sampling.run import sample

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(tiny_dir)


@pytest.fixture(scope="module")
def uncond_dir(tiny_dir, tmp_path_factory):
    """The fixture's architecture without classes, fresh weights, in the published layout."""
    section, _ = read_config(tiny_dir / "config.yaml")
    section.update(class_cond=False, num_classes=0)
    for key in ("config_path", "checkpoint_path"):
        section["autoenc"][key] = str(tiny_dir / section["autoenc"][key])
    torch.manual_seed(0)
    model = build_generator(section, tiny_dir)
    folder = tmp_path_factory.mktemp("uncond")
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": section, "args": {}}))
    torch.save({"model": model.state_dict(), "model_ema": None, "optimizer": None, "epoch": 0, "scaler": None,
                "args": argparse.Namespace()}, folder / "checkpoint-last.pth")
    return folder


def run_main(argv, capsys):
    try:
        rc = main_sample.main([str(a) for a in argv])
    except SystemExit as e:  # the one-line error of common/cli.py
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def load_npz(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("name", ["sample_nocfg", "sample_cfg"])
def test_greedy_samples_equal_the_fixture_images(tiny_dir, tiny_expected, capsys, tmp_path, name):
    settings = {"sample_nocfg": (0.0, 0), "sample_cfg": (1.5, 2)}[name]
    labels = tiny_expected["labels"]
    rc, out, err = run_main(["--checkpoint", tiny_dir, "--classes", ",".join(map(str, labels.tolist())),
                             "--temperature", 0, "--cfg", settings[0], "--cfg_start_step", settings[1],
                             "--steps_per_scale", 4, "--output_dir", tmp_path, "--device", "cpu"], capsys)
    assert rc == 0, err
    data = load_npz(tmp_path / "samples.npz")
    expected = sample_io.to_uint8(tiny_expected[f"{name}_img_3"]).astype(int)
    assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (3, 32, 32, 3)
    assert np.abs(data["arr_0"].astype(int) - expected).max() <= 2
    assert data["arr_1"].tolist() == labels.tolist()
    assert (tmp_path / "grid.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "shards").exists()


def _config(tmp_path, name, **kw):
    base = dict(checkpoint="", output_dir=str(tmp_path / name), device="cpu", cfg=1.5, cfg_start_step=2)
    base.update(kw)
    return SampleConfig(**base)


def test_same_seed_same_samples_whatever_the_batch_size(tiny, tiny_dir, tmp_path):
    runs = {}
    for name, batch, shard, seed in (("b8", 8, 8, 0), ("b3", 3, 5, 0), ("seed1", 8, 8, 1)):
        config = _config(tmp_path, name, checkpoint=str(tiny_dir), num_samples=8, batch_size=batch,
                         shard_size=shard, seed=seed, random_classes=True)
        runs[name] = load_npz(sample(config, model=tiny).samples_npz)
    ref = runs["b8"]
    assert np.array_equal(runs["b3"]["arr_1"], ref["arr_1"])
    # Same tokens; the decoder's float32 sums may differ by a rounding step with the batch.
    diff = np.abs(runs["b3"]["arr_0"].astype(int) - ref["arr_0"])
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert len(set(ref["arr_1"].tolist())) > 1
    assert not np.array_equal(runs["seed1"]["arr_1"], ref["arr_1"])
    assert np.abs(runs["seed1"]["arr_0"].astype(int) - ref["arr_0"]).mean() > 10


def test_fid_run_interrupted_and_resumed_equals_an_uninterrupted_run(tiny, tiny_dir, tmp_path):
    common = dict(checkpoint=str(tiny_dir), fid=True, num_samples=20, shard_size=5, seed=3)
    whole = sample(_config(tmp_path, "whole", batch_size=20, **common), model=tiny)
    reference = load_npz(whole.samples_npz)

    parts = _config(tmp_path, "parts", batch_size=3, max_shards=1, **common)
    assert sample(parts, model=tiny) is None
    shard_dir = Path(parts.output_dir) / "shards"
    assert sorted(p.name for p in shard_dir.glob("shard_*.npz")) == ["shard_0_5.npz"]
    assert not (Path(parts.output_dir) / "samples.npz").exists()
    # A process killed while writing leaves a partial temporary file behind.
    (shard_dir / f".shard_10_15.npz.{dead_pid()}-0a1b2c3d.tmp").write_bytes(b"partial")
    with pytest.raises(ValueError, match="cfg=1.5.*cfg=2.0"):
        sample(_config(tmp_path, "parts", batch_size=3, **{**common, "cfg": 2.0}), model=tiny)
    assert (shard_dir / "shard_0_5.npz").is_file()

    resumed = sample(_config(tmp_path, "parts", batch_size=6, **common), model=tiny)
    result = load_npz(resumed.samples_npz)
    assert result["arr_0"].shape == (20, 32, 32, 3)
    assert np.bincount(result["arr_1"], minlength=10).tolist() == [2] * 10
    assert np.array_equal(result["arr_1"], reference["arr_1"])
    diff = np.abs(result["arr_0"].astype(int) - reference["arr_0"])
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    sample_io.check_samples(resumed.samples_npz, 20, 10)
    assert not shard_dir.exists()


def test_two_processes_under_torchrun_give_the_single_process_samples(tiny, tiny_dir, tmp_path):
    args = ["--checkpoint", str(tiny_dir), "--fid", "--num_samples", "10", "--shard_size", "3", "--seed", "4",
            "--cfg", "1.5", "--device", "cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "main_sample.py"), *args, "--batch_size", "2", "--output_dir", str(tmp_path / "two")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = load_npz(tmp_path / "two" / "samples.npz")
    one = load_npz(sample(_config(tmp_path, "one", checkpoint=str(tiny_dir), fid=True, num_samples=10,
                                  shard_size=10, seed=4, batch_size=10, cfg_start_step=5), model=tiny).samples_npz)
    assert np.array_equal(two["arr_1"], one["arr_1"])
    diff = np.abs(two["arr_0"].astype(int) - one["arr_0"])
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_figures_are_pngs_of_the_samples(tiny, tiny_dir, tmp_path):
    config = _config(tmp_path, "fig", checkpoint=str(tiny_dir), classes=[1, 2, 3], num_samples=4, batch_size=2,
                     steps_per_scale=[1, 2, 4, 4], save_pyramid=True, save_fill=True, save_step_maps=True,
                     save_entropy_plot=True, vis_samples=3)
    outputs = sample(config, model=tiny)
    assert set(outputs.figures) == {"pyramid", "fill", "step_maps", "entropy_plot", "entropy_stats"}
    for key, path in outputs.figures.items():
        if key != "entropy_stats":
            assert path.read_bytes()[:8] == PNG_MAGIC, key
    with Image.open(outputs.figures["fill"]) as fill:
        # steps 1 + 2 + 4 + 4 = 11 columns, 3 rows of enlarged 64 px panels under a title strip,
        # the rows titled with their classes on the left
        assert fill.width > 11 * 64 + 10 * 2 and fill.height > 3 * 64
        classes = np.asarray(fill)[:, :fill.width - (11 * 64 + 10 * 2)]
        assert (classes < 255).any()
    assert load_npz(outputs.samples_npz)["arr_1"].tolist() == [1, 2, 3, 1]


def test_unconditional_model_writes_images_without_labels(uncond_dir, tmp_path, capsys):
    rc, _, err = run_main(["--checkpoint", uncond_dir, "--num_samples", 3, "--output_dir", tmp_path,
                           "--device", "cpu", "--steps_per_scale", "1,4,4,4"], capsys)
    assert rc == 0, err
    data = load_npz(tmp_path / "samples.npz")
    assert list(data) == ["arr_0"] and data["arr_0"].shape == (3, 32, 32, 3)


def test_calculate_flops_prints_them_and_guidance_costs_less_than_double(tiny, tiny_dir, capsys, tmp_path):
    rc, out, err = run_main(["--checkpoint", tiny_dir, "--calculate_flops", "--output_dir", tmp_path,
                             "--device", "cpu"], capsys)
    assert rc == 0, err
    gflops = float(out.strip().split(": ")[1])
    assert gflops > 0 and not (tmp_path / "samples.npz").exists()
    base = dict(checkpoint=str(tiny_dir), output_dir=str(tmp_path), device="cpu")
    plain = flops_per_sample(tiny, SampleConfig(**base, cfg=0.0), "cpu")
    guided = flops_per_sample(tiny, SampleConfig(**base, cfg=1.5, cfg_start_step=0), "cpu")
    assert plain < guided < 2 * plain  # guidance doubles the transformer rows, not the decoder


@pytest.mark.parametrize("extra,message", [
    (["--classes", "3,12"], "--classes: class 12 is out of range, this model has classes 0..9"),
    (["--steps_per_scale", "1,4,4"], "--steps_per_scale: steps_per_scale has 3 entries but the model has 4 scales"),
    (["--use_ema"], "no 'model_ema' state dict"),
    (["--fid", "--num_samples", "25"], "--num_samples 25 is not a multiple of the model's 10 classes"),
    (["--batch_size", "0"], "--batch_size must be >= 1"),
])
def test_bad_input_is_one_clear_line(tiny_dir, tmp_path, capsys, extra, message):
    keep = tmp_path / "keep.txt"
    keep.write_text("earlier output")
    rc, out, err = run_main(["--checkpoint", tiny_dir, "--output_dir", tmp_path, "--device", "cpu", *extra], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("main_sample.py: error: ") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"] and keep.read_text() == "earlier output"


def test_guidance_on_an_unconditional_model_is_one_clear_line(uncond_dir, tmp_path, capsys):
    rc, _, err = run_main(["--checkpoint", uncond_dir, "--cfg", 1.5, "--output_dir", tmp_path,
                           "--device", "cpu"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "--cfg 1.5: this model is unconditional" in err, err


def test_missing_checkpoint_from_the_command_line(tmp_path):
    missing = tmp_path / "nope"
    proc = subprocess.run([sys.executable, str(REPO / "main_sample.py"), "--checkpoint", str(missing),
                           "--output_dir", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == f"main_sample.py: error: checkpoint not found: {missing}\n"


def test_malformed_step_list_is_one_clear_line(capsys):
    rc, _, err = run_main(["--checkpoint", "x", "--output_dir", "y", "--steps_per_scale", "1,a"], capsys)
    assert rc == 2
    assert err == "main_sample.py: error: --steps_per_scale must be an integer or a list of integers, got '1,a'\n"


def test_bf16_precision_stays_close_to_fp32(tiny_dir, tiny_expected, capsys, tmp_path):
    """--precision bf16 samples the same classes with images near the fp32 ones (greedy draws
    may flip at near-ties, so the check is on the mean, not every pixel)."""
    labels = ",".join(map(str, tiny_expected["labels"].tolist()))
    rc, _, err = run_main(["--checkpoint", tiny_dir, "--classes", labels, "--temperature", 0, "--cfg", 0,
                           "--steps_per_scale", 4, "--precision", "bf16", "--output_dir", tmp_path, "--device", "cpu"],
                          capsys)
    assert rc == 0, err
    got = load_npz(tmp_path / "samples.npz")["arr_0"].astype(float)
    expected = sample_io.to_uint8(tiny_expected["sample_nocfg_img_3"]).astype(float)
    assert np.abs(got - expected).mean() < 8


def test_fid_mode_only_when_asked(tiny):
    """50,000 samples (the ADM count) without --fid are random classes, not silently class-balanced."""
    assert not SampleConfig(checkpoint="c", output_dir="d", num_samples=50_000).fid
    assert plan_for(SampleConfig(checkpoint="c", output_dir="d", num_samples=50_000), tiny).label_mode == "random"
    asked = plan_for(SampleConfig(checkpoint="c", output_dir="d", num_samples=50_000, fid=True), tiny)
    assert asked.label_mode == "balanced" and asked.num_samples == 50_000


def _snapshot(folder: Path) -> dict:
    """Every file under folder with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


FID_ARGS = ["--fid", "--num_samples", 10, "--shard_size", 5, "--cfg", 1.5, "--device", "cpu"]


def test_rerunning_a_finished_fid_run_draws_nothing_and_another_command_is_refused(tiny_dir, tmp_path, capsys):
    out = tmp_path / "fid"
    command = ["--checkpoint", tiny_dir, "--output_dir", out, *FID_ARGS]
    rc, _, err = run_main(command, capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "samples.npz", "sampling.json"]
    record = json.loads((out / "sampling.json").read_text())
    assert record["cfg"] == 1.5 and record["label_mode"] == "balanced" and record["num_samples"] == 10
    before = _snapshot(out)

    rc, stdout, err = run_main(command + ["--batch_size", 3], capsys)  # the batch size does not change samples
    assert rc == 0 and err == "", err
    assert "holds this run's finished samples already" in stdout and _snapshot(out) == before

    for other, key in ((["--cfg", 2.0], "cfg"), (["--seed", 1], "seed"), (["--save_fill"], "save_fill")):
        rc, _, err = run_main(command + other, capsys)
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert f"this folder's samples were drawn with {key}=" in err and "use another --output_dir" in err, err
        assert _snapshot(out) == before


def test_a_finished_run_missing_an_output_writes_it_without_drawing_again(tiny_dir, tmp_path, capsys):
    out = tmp_path / "fid"
    command = ["--checkpoint", tiny_dir, "--output_dir", out, *FID_ARGS]
    assert run_main(command, capsys)[0] == 0
    samples = _snapshot(out)["samples.npz"]
    (out / "grid.png").unlink()  # as if killed after packing
    rc, stdout, _ = run_main(command, capsys)
    assert rc == 0 and "wrote" in stdout and (out / "grid.png").is_file()
    assert _snapshot(out)["samples.npz"] == samples


def test_a_folder_with_files_of_no_sampling_run_is_refused(tiny_dir, tmp_path, capsys):
    (tmp_path / "samples.npz").write_bytes(b"the user's own")
    before = _snapshot(tmp_path)
    rc, _, err = run_main(["--checkpoint", tiny_dir, "--output_dir", tmp_path, *FID_ARGS], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"{tmp_path / 'samples.npz'} is there but no sampling.json" in err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("record", [b"{\"cfg\": 1.5", b"[1.5]", b"\xff\xfe"])
def test_a_damaged_sampling_json_is_one_clear_line(tiny_dir, tmp_path, capsys, record):
    (tmp_path / "sampling.json").write_bytes(record)
    before = _snapshot(tmp_path)
    rc, _, err = run_main(["--checkpoint", tiny_dir, "--output_dir", tmp_path, *FID_ARGS], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert str(tmp_path / "sampling.json") in err
    assert _snapshot(tmp_path) == before


def test_a_folder_another_process_writes_is_refused(tiny_dir, tmp_path, capsys):
    from common.files import run_lock

    out = tmp_path / "busy"
    with run_lock(out):
        rc, _, err = run_main(["--checkpoint", tiny_dir, "--output_dir", out, *FID_ARGS], capsys)
        assert rc == 2 and err.count("\n") == 1, err
        assert f"{out} is in use by another run (process {os.getpid()})" in err
        assert sorted(p.name for p in out.iterdir()) == [".run.lock"]
    assert not list(out.iterdir())


def test_an_interrupted_run_s_temporaries_are_removed_at_the_next_start(tiny, tiny_dir, tmp_path):
    common = dict(checkpoint=str(tiny_dir), fid=True, num_samples=10, shard_size=5, batch_size=5)
    first = _config(tmp_path, "run", max_shards=1, **common)
    assert sample(first, model=tiny) is None
    out = Path(first.output_dir)
    partial = [out / f".samples.npz.{dead_pid()}-0a1b2c3d.tmp", out / "shards" / f".shard_5_10.npz.{dead_pid()}-0a1b2c3d.tmp"]
    for path in partial:
        path.write_bytes(b"partial")
    keep = out / "shards" / "notes.txt"  # not of the temporaries' naming: not ours to remove
    keep.write_text("mine")
    assert sample(_config(tmp_path, "run", **common), model=tiny).samples_npz.is_file()
    assert not any(p.exists() for p in partial)
    assert keep.read_text() == "mine" and sorted(p.name for p in keep.parent.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("options, message", [
    ("--cfg nan", "--cfg must be a number, got 'nan'"),
    ("--cfg inf", "--cfg must be a number, got 'inf'"),
    ("--cfg -0.5", "--cfg must be >= 0, got -0.5"),
    ("--temperature nan", "--temperature must be a number, got 'nan'"),
    ("--steps_per_scale 0", "--steps_per_scale must be >= 1, got 0"),
    ("--steps_per_scale 1,4,-1,4", "--steps_per_scale must be >= 1, got -1"),
    ("--num_samples 0", "--num_samples must be >= 1, got 0"),
    ("--seed -1", "--seed must be >= 0, got -1"),
    ("--classes 3,12", "--classes: class 12 is out of range"),
    ("--classes 1 --random_classes", "--classes and --random_classes exclude each other"),
    ("--fid --classes 1", "--fid draws class-balanced labels"),
    ("--shard_size 0", "--shard_size must be >= 1, got 0"),
    ("--cfg 1e39", "--cfg must be at most 3.403e+38 (the largest float32, which it is used as), got 1e+39"),
    ("--temperature 1e-45", "--temperature must be 0 or at least 1.175e-38 (the smallest normal float32, which it "
                            "is used as), got 1e-45"),
    ("--cfg 3 --cfg_start_step 1000", "cfg_start_step 1000 is at or beyond the last step: these steps per scale "
                                      "sample 21 steps (0..20), so cfg 3 would guide none of them"),
])
def test_bad_values_are_refused_before_anything_is_written(tiny_dir, tmp_path, capsys, options, message):
    """The folder holds a finished run: a refused command changes none of its files."""
    out = tmp_path / "run"
    base = ["--checkpoint", tiny_dir, "--output_dir", out, "--num_samples", 2, "--device", "cpu"]
    assert run_main(base + ["--classes", "1,2"], capsys)[0] == 0
    before = _snapshot(out)
    rc, _, err = run_main(base + options.split(), capsys)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("main_sample.py: error: ") and message in err, err
    assert "Traceback" not in err and _snapshot(out) == before


def test_a_refused_command_leaves_no_trace_for_the_corrected_one(tiny_dir, tmp_path, capsys):
    out = tmp_path / "new"
    rc, _, err = run_main(["--checkpoint", tiny_dir, "--output_dir", out, *FID_ARGS, "--num_samples", 25], capsys)
    assert rc == 2 and "--num_samples 25 is not a multiple" in err and not out.exists()
    assert run_main(["--checkpoint", tiny_dir, "--output_dir", out, *FID_ARGS], capsys)[0] == 0


def test_a_config_made_in_code_gets_the_command_line_s_checks(tiny, tmp_path):
    for bad, message in ((dict(cfg=float("nan")), "cfg must be a number, got nan"),
                         (dict(temperature=float("inf")), "temperature must be a number, got inf"),
                         (dict(steps_per_scale=[1, 4, 0, 4]), "steps_per_scale must be >= 1, got 0")):
        with pytest.raises(ValueError, match=message):
            sample(_config(tmp_path, "code", **bad), model=tiny)
    assert not (tmp_path / "code").exists()


def test_calculate_flops_needs_no_output_dir(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_main(["--checkpoint", tiny_dir, "--calculate_flops", "--device", "cpu"], capsys)
    assert rc == 0 and out.startswith("GFLOPs per sample: "), err
    assert not list(tmp_path.iterdir())


def test_sampling_without_output_dir_is_one_clear_line(tiny_dir, capsys):
    rc, _, err = run_main(["--checkpoint", tiny_dir, "--device", "cpu"], capsys)
    assert rc == 2 and err == "main_sample.py: error: --output_dir must be given\n"


def test_steps_per_scale_defaults_to_the_model_s_num_blocks_per_scale(tiny, tmp_path):
    assert tiny.config.num_blocks_per_scale == 8  # the fixture's config leaves it out: the published default
    outputs = sample(_config(tmp_path, "default", num_samples=1, classes=[3]), model=tiny)
    record = json.loads((outputs.samples_npz.parent / "sampling.json").read_text())
    assert record["steps_per_scale"] == list(tiny.steps_per_scale_list(None)) and record["cfg_start_step"] == 2
    assert SampleConfig().cfg is None and record["cfg"] == 1.5
    unguided = sample(_config(tmp_path, "published_cfg", num_samples=1, classes=[3], cfg=None),
                      model=tiny)
    assert json.loads((unguided.samples_npz.parent / "sampling.json").read_text())["cfg"] == 2.0


def test_a_run_resumed_against_a_replaced_checkpoint_file_is_refused(tiny_dir, tmp_path, capsys):
    """Issue 23: an FID run resumed after its checkpoint file was replaced (same name, other weights) mixed
    samples of two models in one samples.npz. sampling.json records the file's SHA-256; a resume against
    another is one line naming the folder's record and the checkpoint, and changes nothing."""
    checkpoint = shutil.copytree(tiny_dir, tmp_path / "model")
    out = tmp_path / "fid"
    command = ["--checkpoint", checkpoint, "--output_dir", out, *FID_ARGS, "--max_shards", 1]
    rc, _, err = run_main(command, capsys)
    assert rc == 0, err
    record = json.loads((out / "sampling.json").read_text())
    assert record["checkpoint_sha256"] == hashlib.sha256((checkpoint / "checkpoint-last.pth").read_bytes()).hexdigest()
    state = torch.load(checkpoint / "checkpoint-last.pth", weights_only=False)
    for tensor in state["model"].values():
        if tensor.is_floating_point():
            tensor.add_(0.5)
    (checkpoint / "checkpoint-last.pth").unlink()
    torch.save(state, checkpoint / "checkpoint-last.pth")  # another model under the same name
    before = _snapshot(out)
    rc, _, err = run_main(command[:-2], capsys)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(out / "sampling.json") in err and str(checkpoint) in err and "the file was replaced" in err, err
    assert _snapshot(out) == before
