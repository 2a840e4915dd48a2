"""Models from the Hugging Face Hub (models/hub.py), offline: each test lays out a Hub cache in the
library's own layout (models--<owner>--<name>/{blobs,snapshots/<commit>,refs}) holding a tiny model of
tests/fixtures, and points HF_HUB_CACHE at it."""
import hashlib
import shutil
import socket

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import constants

from cli_check import SCRIPT_ENV, assert_one_line_error, run_script
from hub_cache import lay_out_cache
from models import load_model
from models import hub

OTHER_COMMIT = "b" * 40


def model_files(fixture, folder, published_layout=False) -> dict:
    """A fixture model as files of a repository under `folder`; with `published_layout` its config names
    the autoencoder as the published configs do, from the repository's root (pretrained_models/autoenc/)."""
    config = yaml.safe_load((fixture / "config.yaml").read_text())
    autoenc = "autoenc/autoencoder_config.yaml"
    if published_layout:
        autoenc = "pretrained_models/autoenc/autoencoder_config.yaml"
        config["model"]["autoenc"] = {**config["model"]["autoenc"], "config_path": autoenc,
                                      "checkpoint_path": "pretrained_models/autoenc/checkpoint.pth"}
    return {f"{folder}/config.yaml": yaml.safe_dump(config).encode(),
            f"{folder}/checkpoint-last.pth": (fixture / "checkpoint-last.pth").read_bytes(),
            (autoenc if published_layout else f"{folder}/{autoenc}"):
                (fixture / "autoenc" / "autoencoder_config.yaml").read_bytes()}


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hub cache, offline: the environment for scripts, and the library's constants (read from
    the same variables when it was imported) for this process."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _script_env(cache, **more):
    return {**SCRIPT_ENV, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", **more}


def test_hub_references_parse_and_malformed_ones_are_refused():
    assert hub.parse_reference("hf://deigen/checkerboardgen/pretrained_models/checkerboard-L-2x@v1") == \
        hub.HubReference("deigen/checkerboardgen", "pretrained_models/checkerboard-L-2x", "v1")
    assert hub.parse_reference("checkerboard-L-4x") == \
        hub.HubReference(hub.PUBLISHED_REPO, "pretrained_models/checkerboard-L-4x")
    assert hub.parse_reference("runs/S") is None and hub.parse_reference("autoenc") is None
    for bad in ("hf://deigen/checkerboardgen", "hf://a/b/c@", "hf://a/b/../c"):
        with pytest.raises(ValueError, match="not a Hub model reference"):
            hub.parse_reference(bad)


def test_a_bare_name_is_a_local_folder_when_there_is_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkerboard-L-2x").mkdir()
    assert hub.parse_reference("checkerboard-L-2x") is None


def test_load_model_through_a_hub_reference(tiny_dir, offline_cache, tmp_path, monkeypatch):
    lay_out_cache(offline_cache, "someone/tiny", model_files(tiny_dir, "models/tiny"))
    monkeypatch.chdir(tmp_path)  # nothing of the model in the working directory
    assert _same_weights(load_model("hf://someone/tiny/models/tiny"), load_model(tiny_dir))
    assert _same_weights(load_model("hf://someone/tiny/models/tiny/checkpoint-last.pth@main"), load_model(tiny_dir))


def test_a_revision_is_honoured(tiny_dir, fixtures_dir, offline_cache):
    lay_out_cache(offline_cache, "someone/tiny", model_files(tiny_dir, "m"))
    lay_out_cache(offline_cache, "someone/tiny", model_files(fixtures_dir / "tiny_single", "m"), OTHER_COMMIT,
                  refs=("v1",))
    single = load_model(fixtures_dir / "tiny_single")
    assert _same_weights(load_model("hf://someone/tiny/m@v1"), single)
    assert _same_weights(load_model(f"hf://someone/tiny/m@{OTHER_COMMIT}"), single)
    assert _same_weights(load_model("hf://someone/tiny/m"), load_model(tiny_dir))
    with pytest.raises(FileNotFoundError, match="not in the Hub cache"):
        load_model("hf://someone/tiny/m@v2")


def test_the_autoencoder_config_comes_from_the_same_snapshot(tiny_dir, fixtures_dir, offline_cache, tmp_path,
                                                             monkeypatch):
    """Published configs name pretrained_models/autoenc/... from the repository's root: that is the
    snapshot's, never the working directory's (which here holds another model's autoencoder)."""
    lay_out_cache(offline_cache, "someone/tiny", model_files(tiny_dir, "pretrained_models/tiny", True))
    stray = tmp_path / "cwd" / "pretrained_models" / "autoenc"
    shutil.copytree(fixtures_dir / "tiny_options" / "autoenc", stray)
    monkeypatch.chdir(tmp_path / "cwd")
    assert _same_weights(load_model("hf://someone/tiny/pretrained_models/tiny"), load_model(tiny_dir))


def test_published_files_are_checked_against_sha256sums(tiny_dir, offline_cache, tmp_path):
    files = model_files(tiny_dir, "pretrained_models/checkerboard-L-2x", True)
    lay_out_cache(offline_cache, hub.PUBLISHED_REPO, files)
    ref = hub.parse_reference("checkerboard-L-2x")
    sums = tmp_path / "SHA256SUMS"
    listed = {path.removeprefix("pretrained_models/"): hashlib.sha256(data).hexdigest() for path, data in files.items()}
    sums.write_text("".join(f"{h}  {rel}\n" for rel, h in listed.items()))
    assert _same_weights(load_model(hub.fetch_model(ref, sums)), load_model(tiny_dir))

    listed["autoenc/autoencoder_config.yaml"] = "0" * 64
    sums.write_text("".join(f"{h}  {rel}\n" for rel, h in listed.items()))
    with pytest.raises(ValueError, match="autoencoder_config.yaml .* has SHA-256 [0-9a-f]{64}, expected 0{64}; refused"):
        hub.fetch_model(ref, sums)
    del listed["autoenc/autoencoder_config.yaml"]
    sums.write_text("".join(f"{h}  {rel}\n" for rel, h in listed.items()))
    with pytest.raises(ValueError, match="not listed in .*SHA256SUMS"):
        hub.fetch_model(ref, sums)


def _sample_args(checkpoint, out):
    return ("main_sample.py", "--checkpoint", checkpoint, "--classes", "1,2", "--num_samples", "2",
            "--steps_per_scale", "1", "--cfg_start_step", "1", "--seed", "0", "--device", "cpu", "--output_dir", out)


def test_main_sample_through_a_hub_reference(tiny_dir, offline_cache, tmp_path):
    lay_out_cache(offline_cache, "someone/tiny", model_files(tiny_dir, "models/tiny"))
    hub_run = run_script(*_sample_args("hf://someone/tiny/models/tiny", tmp_path / "hub"), env=_script_env(offline_cache))
    assert hub_run.code == 0, hub_run.err
    local_run = run_script(*_sample_args(tiny_dir, tmp_path / "local"), env=_script_env(offline_cache))
    assert local_run.code == 0, local_run.err
    assert np.array_equal(np.load(tmp_path / "hub" / "samples.npz")["arr_0"],
                          np.load(tmp_path / "local" / "samples.npz")["arr_0"])


def test_main_sample_refuses_a_published_file_with_another_sha256(tiny_dir, offline_cache, tmp_path):
    """The tiny model posing as the published L-2x: pretrained_models/SHA256SUMS refuses it."""
    lay_out_cache(offline_cache, hub.PUBLISHED_REPO, model_files(tiny_dir, "pretrained_models/checkerboard-L-2x", True))
    result = run_script(*_sample_args("checkerboard-L-2x", tmp_path / "out"), env=_script_env(offline_cache))
    assert_one_line_error(result, "main_sample.py", "checkpoint-last.pth", "has SHA-256",
                          "expected d0b1c226a3b6bc84827855d2228bc21642774d99145d5978636f2a1e3553f297", "refused")
    assert not (tmp_path / "out").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again once the socket is: nothing listens there


def test_no_network_is_one_line(offline_cache, tmp_path):
    env = _script_env(offline_cache, HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    result = run_script(*_sample_args("hf://someone/tiny/models/tiny", tmp_path / "out"), env=env)
    assert_one_line_error(result, "main_sample.py", "hf://someone/tiny/models/tiny/checkpoint-last.pth",
                          "could not be fetched", "no answer from http://127.0.0.1")
    assert not (tmp_path / "out").exists()


def test_offline_and_not_cached_is_one_line(offline_cache, tmp_path):
    result = run_script(*_sample_args("checkerboard-L-4x", tmp_path / "out"), env=_script_env(offline_cache))
    assert_one_line_error(result, "main_sample.py", "checkerboard-L-4x/checkpoint-last.pth", "HF_HUB_OFFLINE")


def test_resume_takes_a_local_folder_only(tiny_dir, offline_cache, tmp_path):
    lay_out_cache(offline_cache, "someone/tiny", model_files(tiny_dir, "models/tiny"))
    result = run_script("main.py", "--resume", "hf://someone/tiny/models/tiny", "--output_dir", tmp_path / "run",
                        env=_script_env(offline_cache))
    assert_one_line_error(result, "main.py", "--resume hf://someone/tiny/models/tiny", "--weights_init")
    assert not (tmp_path / "run").exists()


def test_a_sweep_keeps_the_hub_reference_as_its_model(tiny_dir, offline_cache, tmp_path, monkeypatch):
    """What the sweep records and hands to each point's sampling is the reference, not a local path made of it."""
    from sweep.points import inspect_checkpoint
    lay_out_cache(offline_cache, "someone/tiny", model_files(tiny_dir, "models/tiny"))
    monkeypatch.chdir(tmp_path)
    swept = inspect_checkpoint("hf://someone/tiny/models/tiny@main", use_ema=False)
    assert swept.path == "hf://someone/tiny/models/tiny@main"
    assert _same_weights(load_model(swept.path), load_model(tiny_dir))


def test_weights_init_reads_a_hub_model(tiny_dir, offline_cache, tmp_path, monkeypatch):
    """--weights_init goes through load_training_checkpoint, and the scales of its model (for remapping
    position tables) through the config beside the fetched checkpoint."""
    from training.checkpoint import checkpoint_scale_sizes, load_training_checkpoint
    lay_out_cache(offline_cache, "someone/tiny", model_files(tiny_dir, "pretrained_models/tiny", True))
    monkeypatch.chdir(tmp_path)
    ckpt, path = load_training_checkpoint("hf://someone/tiny/pretrained_models/tiny")
    assert ckpt["model"].keys() == load_model(tiny_dir).state_dict().keys()
    assert checkpoint_scale_sizes(path) == list(load_model(tiny_dir).scale_sizes)


def test_a_killed_downloads_partial_blob_is_reaped_and_a_running_ones_kept(tiny_dir, offline_cache):
    from filelock import FileLock
    repo = lay_out_cache(offline_cache, "someone/tiny", model_files(tiny_dir, "models/tiny"))
    dead = repo / "blobs" / f"{'1' * 64}.0a1b2c3d.incomplete"
    running = repo / "blobs" / f"{'2' * 64}.4e5f6a7b.incomplete"
    for partial in (dead, running):
        partial.write_bytes(b"part of a blob")
    lock = offline_cache / ".locks" / "models--someone--tiny" / f"{'2' * 64}.lock"
    lock.parent.mkdir(parents=True)
    with FileLock(lock):  # a download of that blob under way
        load_model("hf://someone/tiny/models/tiny")
    assert not dead.exists() and running.exists()
