"""Outputs are never destroyed (issue 17): a run folder belongs to one run, is locked while written, an
interrupted run's partial files are removed on the next start, and a failed write (a full disk) leaves the
checkpoint before it whole."""
import errno
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import main
from cli_check import REPO, Files, assert_one_line_error, run_main
from models.checkpoint_format import load_checkpoint_file
from common.files import LOCK_NAME
from conftest import dead_pid
from common.config import given_options
from train_ae_codebook import main_train_ae
from train_ae_codebook.train_config import make_config
from train_ae_codebook.training import AutoencoderRun
from train_support import cached_tiny_config, digits_subset
from training import checkpoint as training_checkpoint
from training.config import TrainConfig
from training.engine import setup, train
from training.token_cache import create_cache


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_dir) -> TrainConfig:
    """The tiny model on 40 digits from their token cache: 5 iterations of 8 per epoch."""
    data = digits_subset(tmp_path_factory, per_class=4)
    return cached_tiny_config(tmp_path_factory.mktemp("config"), tiny_dir, data)


@pytest.fixture(scope="module")
def two_epochs(config, tmp_path_factory):
    """A finished run of two epochs, each kept: checkpoint-0.pth, checkpoint-1.pth = checkpoint-last.pth."""
    return train(replace(config, output_dir=str(tmp_path_factory.mktemp("runs") / "two"), epochs=2, save_freq=1))


@pytest.fixture(scope="module")
def other_run(config, tmp_path_factory):
    return train(replace(config, output_dir=str(tmp_path_factory.mktemp("runs") / "other"), seed=5))


def copy_of(run, tmp_path, name="copy"):
    return shutil.copytree(run, tmp_path / name)


def resume_argv(folder, *more):
    return ["--resume", folder, "--device", "cpu", "--no-progress", *more]


def weights(path):
    return load_checkpoint_file(path)["model"]


# ---- data loss ---------------------------------------------------------------------------------------
def test_resume_into_another_runs_folder_is_refused(two_epochs, other_run, tmp_path, capfd):
    a, b = copy_of(two_epochs, tmp_path, "a"), copy_of(other_run, tmp_path, "b")
    files = Files(a, b)
    result = run_main(main.main, resume_argv(a, "--output_dir", b, "--epochs", "3"), capfd)
    assert_one_line_error(result, "main.py", str(b), "already holds checkpoint-last.pth", f"--resume {b}")
    files.assert_unchanged()


def test_a_new_run_writes_only_into_a_new_or_empty_folder(config, tmp_path, capfd):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("my notes\n")  # a file the run would otherwise overwrite
    files = Files(tmp_path)
    result = run_main(main.main, ["--config", config.config, "--data_path", config.data_path, "--cache_path",
                                  config.cache_path, "--use_cache", "--output_dir", folder], capfd)
    assert_one_line_error(result, "main.py", f"--output_dir {folder} is not empty (config.yaml)")
    files.assert_unchanged()
    (folder / "config.yaml").unlink()
    (folder / LOCK_NAME).write_text("")  # what a killed run's lock leaves: an empty folder all the same
    setup(replace(config, output_dir=str(folder))).close()  # then stopped before its first checkpoint
    # the same run starts again there; another run (another recipe) may not
    setup(replace(config, output_dir=str(folder))).close()
    files = Files(tmp_path)
    with pytest.raises(ValueError, match=r"is not empty \(args.yaml, .*\) \(its config.yaml is another run's\)"):
        setup(replace(config, output_dir=str(folder), lr=0.5))
    files.assert_unchanged()


def test_resume_into_a_new_folder_continues_there_and_leaves_the_source_alone(config, two_epochs, tmp_path):
    files = Files(two_epochs)
    run = setup(replace(config, output_dir=str(tmp_path / "fork"), resume=str(two_epochs / "checkpoint-0.pth"),
                        epochs=2))
    run.close()
    files.assert_unchanged()
    assert run.start_epoch == 1 and (tmp_path / "fork" / "config.yaml").is_file()
    for name, value in weights(two_epochs / "checkpoint-0.pth").items():
        assert torch.equal(value, run.model.state_dict()[name]), name


def test_resume_of_an_older_checkpoint_into_its_folder_is_refused(two_epochs, tmp_path, capfd):
    run = copy_of(two_epochs, tmp_path)
    files = Files(run)
    result = run_main(main.main, resume_argv(run / "checkpoint-0.pth", "--epochs", "3"), capfd)
    assert_one_line_error(result, "main.py", f"{run / 'checkpoint-0.pth'} is epoch 0",
                          f"{run / 'checkpoint-last.pth'} is epoch 1", "--output_dir")
    files.assert_unchanged()


# ---- the lock ---------------------------------------------------------------------------------------
HOLD_LOCK = "import sys, time; from common.files import run_lock\nwith run_lock(sys.argv[1]):\n print('held', " \
            "flush=True); sys.stdin.read()"


@pytest.fixture
def held(tmp_path):
    """held(folder): another process holds the folder's lock until the test ends."""
    holders = []

    def hold(folder):
        p = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert p.stdout.readline().strip() == "held"
        holders.append(p)
        return p

    yield hold
    for p in holders:
        p.communicate("", timeout=30)


def test_a_second_process_on_a_run_folder_is_refused(config, two_epochs, tmp_path, capfd, held):
    run = copy_of(two_epochs, tmp_path)
    holder = held(run)
    files = Files(run)
    result = run_main(main.main, resume_argv(run, "--epochs", "3"), capfd)
    assert_one_line_error(result, "main.py", f"{run} is in use by another run (process {holder.pid})")
    files.assert_unchanged()
    # two new runs into one new folder: the second finds it taken when it comes to write
    empty = tmp_path / "empty"
    held(empty)
    with pytest.raises(OSError, match="in use by another run"):
        setup(replace(config, output_dir=str(empty)))
    assert os.listdir(empty) == [LOCK_NAME]


# ---- temporary files ---------------------------------------------------------------------------------
def test_an_interrupted_runs_partial_files_are_removed_on_the_next_start(config, two_epochs, tmp_path):
    run = copy_of(two_epochs, tmp_path)
    leftovers = [run / f".checkpoint-last.pth.{dead_pid()}-0a1b2c3d.tmp",
                 run / "autoenc" / f".autoencoder_config.yaml.{dead_pid()}-abcdefgh.tmp"]
    for path in leftovers:
        path.write_bytes(b"\0" * 1000)
    mine = [run / "notes.tmp", run / ".checkpoint-last.pth.tmp"]  # not the atomic writer's names: kept
    for path in mine:
        path.write_text("mine")
    setup(replace(config, output_dir=None, resume=str(run), epochs=3)).close()
    assert not any(p.exists() for p in leftovers)
    assert all(p.read_text() == "mine" for p in mine)


def test_a_stop_between_the_kept_checkpoint_and_the_last_one_loses_no_epoch(config, two_epochs, tmp_path,
                                                                              monkeypatch):
    run = copy_of(two_epochs, tmp_path)
    for name in ("checkpoint-1.pth", "checkpoint-last.pth"):
        (run / name).unlink()
    shutil.copy(run / "checkpoint-0.pth", run / "checkpoint-last.pth")  # the run as it was after epoch 0

    def killed(*args):
        raise KeyboardInterrupt  # the process stops between the two writes of epoch 1

    with monkeypatch.context() as patch:
        patch.setattr(training_checkpoint, "atomic_copy", killed)
        with pytest.raises(KeyboardInterrupt):
            train(replace(config, output_dir=None, resume=str(run), epochs=2, save_freq=1))
    assert load_checkpoint_file(run / "checkpoint-last.pth")["epoch"] == 0
    train(replace(config, output_dir=None, resume=str(run), epochs=2, save_freq=1))
    assert load_checkpoint_file(run / "checkpoint-last.pth")["epoch"] == 1
    for name, value in weights(two_epochs / "checkpoint-1.pth").items():  # as if never stopped
        assert torch.equal(value, weights(run / "checkpoint-1.pth")[name]), name


def test_a_kept_checkpoint_an_earlier_version_left_unmade_is_made_on_resume(config, two_epochs, tmp_path):
    run = copy_of(two_epochs, tmp_path)
    (run / "checkpoint-1.pth").unlink()  # stopped after checkpoint-last.pth, before the kept link
    setup(replace(config, output_dir=None, resume=str(run))).close()
    assert load_checkpoint_file(run / "checkpoint-1.pth")["epoch"] == 1


# ---- a failed write -------------------------------------------------------------------------------------
def test_a_full_disk_stops_the_run_in_one_line_and_keeps_the_last_checkpoint(two_epochs, tmp_path, capfd, caplog,
                                                                              monkeypatch):
    run = copy_of(two_epochs, tmp_path)
    files = Files(*run.glob("checkpoint-*.pth"))
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # part of it written, then the device is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with caplog.at_level(logging.INFO):
        result = run_main(main.main, resume_argv(run, "--epochs", "3"), capfd)
    assert_one_line_error(result, "main.py", f"writing the epoch 2 checkpoint {run / 'checkpoint-2.pth'} failed "
                          f"(No space left on device)", f"{run / 'checkpoint-last.pth'} (epoch 1) was left as it was", code=1)
    assert any("epoch 2: loss" in r.getMessage() for r in caplog.records)  # the epoch's result came first
    files.assert_unchanged()
    assert not [p for p in run.rglob(".*.tmp")]


# ---- the token cache and autoencoder training: the same rules ------------------------------------------
def test_a_token_cache_folder_is_refused_when_foreign_or_busy_and_cleaned_when_interrupted(config, tmp_path, held):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    files = Files(mine)
    with pytest.raises(ValueError, match=f"--cache_path {mine} holds files but no token cache \\(notes.txt\\)"):
        create_cache(replace(config, cache_path=str(mine), use_cache=False))
    files.assert_unchanged()
    busy = tmp_path / "busy"
    held(busy)
    with pytest.raises(OSError, match=f"{busy} is in use by another run"):
        create_cache(replace(config, cache_path=str(busy), use_cache=False))
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    (interrupted / f".shard-00000.safetensors.{dead_pid()}-abcdef12.tmp").write_bytes(b"\0" * 100)
    create_cache(replace(config, cache_path=str(interrupted), use_cache=False))
    assert sorted(p.name for p in interrupted.iterdir()) == ["metadata.json", "shard-00000.safetensors"]


def test_autoencoder_training_folder_is_locked_and_cleaned(tiny_dir, tmp_path, held, capfd):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(8):
        pixels = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.png")
    out = tmp_path / "ae"
    argv = ["--config", tiny_dir / "autoenc" / "autoencoder_config.yaml", "--data_path", images, "--output_dir", out,
            "--train_all", "--device", "cpu", "--init_steps", "1", "--batch_size", "4", "--epochs", "1",
            "--num_workers", "0", "--no-tensorboard", "--min_size", "4"]
    holder = held(out)
    files = Files(tmp_path)
    assert_one_line_error(run_main(main_train_ae.main, argv, capfd), "main_train_ae.py",
                          f"{out} is in use by another run (process {holder.pid})")
    files.assert_unchanged()
    holder.communicate("", timeout=30)
    leftover = out / f".checkpoint-last.pth.{dead_pid()}-0a1b2c3d.tmp"
    leftover.write_bytes(b"\0" * 1000)
    result = run_main(main_train_ae.main, argv, capfd)
    assert result.code == 0, result.err
    assert not leftover.exists() and (out / "checkpoint.pth").is_file()
    # stopped right after its first write, the same run resumes (at step 0) and ends as the straight one;
    # another run is refused there
    stopped = tmp_path / "stopped"
    argv[argv.index(out)] = stopped
    values = given_options(main_train_ae.get_args_parser(), [str(a) for a in argv])
    AutoencoderRun(make_config(values.pop("config"), {}, values, command_line=True)).start()
    assert [p.name for p in stopped.iterdir()] == ["checkpoint-last.pth"]
    files = Files(stopped)
    assert_one_line_error(run_main(main_train_ae.main, [*argv, "--n_embed", "32"], capfd), "main_train_ae.py",
                          "the run there has", "another output_dir")
    files.assert_unchanged()
    assert run_main(main_train_ae.main, argv, capfd).code == 0
    straight, resumed = (load_checkpoint_file(d / "checkpoint.pth")["state_dict"] for d in (out, stopped))
    assert all(torch.equal(value, resumed[name]) for name, value in straight.items())


def test_resuming_a_finished_run_writes_nothing(two_epochs, tmp_path, capfd, caplog):
    """Issue 23: `--resume` of a finished run said "nothing to do" and yet rewrote config.yaml and args.yaml
    (and opened a new, empty TensorBoard log)."""
    run = copy_of(two_epochs, tmp_path)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(run.rglob("*")) if p.is_file()}
    with caplog.at_level(logging.INFO):
        result = run_main(main.main, resume_argv(run, "--epochs", "2"), capfd)
    assert result.code == 0, result.err
    assert "nothing to do" in caplog.text
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(run.rglob("*")) if p.is_file()}
    assert after == before
