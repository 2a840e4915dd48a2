"""Training runs end to end on real digits: layout, exact resume, learning, failures, inline evaluation."""
import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from models import load_model
from models.checkpoint_format import load_checkpoint_file
from train_support import FAST_ARGS, REPO, cached_tiny_config, digits_subset, tiny_config
from training.metrics_log import read_metrics
from training.config import TrainConfig
from training import engine
from training.engine import GeneratorLoss, NonFiniteLossError, batch_tokens, setup, train, train_step
from training.optimization import StepOptions


# Subprocesses use one thread: several threads on two shared cores can be many times slower.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = digits_subset(tmp_path_factory, per_class=4, val_per_class=1)
    (root / "train" / "5" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_dir, data) -> TrainConfig:
    """Trains from the token cache of 40 digits: 5 iterations of 8 per epoch."""
    return cached_tiny_config(tmp_path_factory.mktemp("run"), tiny_dir, data)


@pytest.fixture(scope="module")
def one_epoch(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("one_epoch")
    train(replace(config, output_dir=str(out)))
    return out


def copy_run(src, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def losses(out, epoch):
    return [m["loss_total"] for m in read_metrics(out) if m.get("epoch") == epoch and "iteration" in m]


def test_main_trains_and_resumes_in_the_published_layout(data, tiny_dir, tmp_path):
    path = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS)
    out = tmp_path / "out"
    common = ["--eval_freq", "1", "--eval_grid_samples", "4"]
    for args in (["--config", path, "--data_path", data, "--output_dir", out, "--device", "cpu"],
                 ["--resume", out, "--epochs", "2", "--device", "cpu"]):
        result = subprocess.run([sys.executable, "main.py", *map(str, args + common)], cwd=REPO,
                                capture_output=True, text=True, timeout=300, env=ONE_THREAD)
        assert result.returncode == 0, result.stderr
    assert "one pass over the 41 images" in result.stderr and "resuming at epoch 1 of 2" in result.stderr
    assert "skipped 1 undecodable images (e.g. " in result.stderr and "truncated.png" in result.stderr
    for name in ("checkpoint-0.pth", "checkpoint-1.pth", "checkpoint-last.pth", "config.yaml", "args.yaml",
                 "autoenc/autoencoder_config.yaml", "samples/epoch-0.png", "samples/epoch-1.png"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    ckpt = load_checkpoint_file(out / "checkpoint-last.pth")
    assert set(ckpt) == {"model", "model_ema", "optimizer", "epoch", "scaler", "args"}
    assert ckpt["epoch"] == 1 and isinstance(ckpt["args"], argparse.Namespace) and ckpt["args"].epochs == 2
    assert set(ckpt["model_ema"]) == set(ckpt["model"]) and any(k.startswith("autoenc.") for k in ckpt["model"])
    model, ema = load_model(out / "checkpoint-last.pth"), load_model(out, use_ema=True)
    assert not torch.equal(model.lm_head.weight, ema.lm_head.weight)
    assert [m["epoch"] for m in read_metrics(out) if m.get("iteration") == 5] == [0, 1]


def test_resume_repeats_an_uninterrupted_run(config, one_epoch, tmp_path):
    straight = train(replace(config, output_dir=str(tmp_path / "straight"), epochs=2))
    resumed = copy_run(one_epoch, tmp_path)
    train(TrainConfig.load(None, device="cpu", resume=str(resumed), epochs=2, progress=False))
    assert losses(resumed, 1) == losses(straight, 1) and len(losses(straight, 1)) == 5
    a, b = (load_checkpoint_file(d / "checkpoint-last.pth") for d in (straight, resumed))
    for key in ("model", "model_ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)
    assert torch.equal(a["optimizer"]["state"][0]["exp_avg"], b["optimizer"]["state"][0]["exp_avg"])


def test_loss_goes_down_on_real_digits(config, tmp_path):
    out = train(replace(config, output_dir=str(tmp_path / "out"), epochs=8, ema=False))
    first, last = losses(out, 0)[0], losses(out, 7)
    assert first == pytest.approx(torch.log(torch.tensor(64.0)).item(), abs=0.3)  # uniform over 64 codes
    assert sum(last) / len(last) < first - 0.5


def test_nonfinite_loss_stops_and_keeps_the_last_checkpoint(config, one_epoch, tmp_path, monkeypatch):
    out = copy_run(one_epoch, tmp_path)
    before = hashlib.sha256((out / "checkpoint-last.pth").read_bytes()).hexdigest()
    forward = GeneratorLoss.forward

    def diverged(self, indices, labels):
        loss, stats = forward(self, indices, labels)
        return loss * float("nan"), {**stats, "loss_total": stats["loss_total"] * float("nan")}

    monkeypatch.setattr(GeneratorLoss, "forward", diverged)
    expected = r"non-finite loss_total nan.* in epoch 1, iterations 1-1.*checkpoint-last.pth \(epoch 0\) was left"
    with pytest.raises(NonFiniteLossError, match=expected):
        train(TrainConfig.load(None, device="cpu", resume=str(out), epochs=2, progress=False))
    assert hashlib.sha256((out / "checkpoint-last.pth").read_bytes()).hexdigest() == before
    assert not (out / "checkpoint-1.pth").exists()


def test_inline_fid_without_inception_weights_warns_once(config, one_epoch, data, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no Inception weights in there
    out = copy_run(one_epoch, tmp_path)
    with caplog.at_level(logging.WARNING):
        train(TrainConfig.load(None, device="cpu", resume=str(out), epochs=3, progress=False, eval_freq=1,
                               eval_grid_samples=4, eval_num_samples=8, eval_reference_data_path=str(data / "val")))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Inception weights not found" in warnings[0], warnings
    assert (out / "samples" / "epoch-1.png").is_file() and (out / "samples" / "epoch-2.png").is_file()
    assert load_checkpoint_file(out / "checkpoint-last.pth")["epoch"] == 2


def test_weights_init_and_an_occupied_output_folder(config, one_epoch, tmp_path):
    with pytest.raises(ValueError, match="already holds checkpoint-last.pth: pass --resume"):
        setup(replace(config, output_dir=str(one_epoch)))
    run = setup(replace(config, output_dir=str(tmp_path / "new"), weights_init=str(one_epoch)))
    weights = load_checkpoint_file(one_epoch / "checkpoint-last.pth")["model"]
    assert run.start_epoch == 0 and not run.optimizer.state
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    run.close()


def test_gradient_accumulation_equals_one_large_batch(config, tmp_path):
    run = setup(replace(config, output_dir=str(tmp_path / "out"), clip_grad=0.0, ema=False))
    run.model.eval()  # no random regularisers: both ways see the same inputs
    batch = batch_tokens(next(iter(run.loader)), run.model, run.device)
    start = {k: v.clone() for k, v in run.model.state_dict().items()}

    def step(halves):
        run.model.load_state_dict(start)
        run.optimizer.state.clear()
        options = StepOptions(accum_iter=halves)
        for h in range(halves):
            part = ([c[h::halves] for c in batch[0]], batch[1][h::halves])
            train_step(run.module, part, run.optimizer, run.scaler, options, accumulate=h < halves - 1)
        return run.model.lm_head.weight.detach().clone()

    assert torch.allclose(step(2), step(1), atol=1e-6)
    run.close()


def test_grad_checkpointing_option_gives_the_same_step(config, tmp_path):
    def step(checkpointing: bool):
        run = setup(replace(config, output_dir=str(tmp_path / f"out{checkpointing}"), ema=False,
                            grad_checkpointing=checkpointing))
        assert run.model.transformer.grad_checkpointing is checkpointing
        batch = batch_tokens(next(iter(run.loader)), run.model, run.device)
        torch.manual_seed(0)
        train_step(run.module, batch, run.optimizer, run.scaler, StepOptions(grad_clip=3.0))
        run.close()
        return run.model.state_dict()

    plain, checkpointed = step(False), step(True)
    assert all(torch.equal(checkpointed[k], v) for k, v in plain.items())


@pytest.mark.parametrize("mirrored,crops", [(True, set(range(10))), (False, set(range(5)))])
def test_mirrored_crops_option_limits_the_drawn_crops(config, tmp_path, mirrored, crops):
    run = setup(replace(config, output_dir=str(tmp_path / "out"), mirrored_crops=mirrored))
    drawn = set()
    for epoch in range(4):
        run.sampler.set_epoch(epoch)
        drawn |= {crop for _, crop in run.sampler}
    run.close()
    assert drawn == crops


def test_save_last_freq_start_epoch_and_resume_precedence(config, one_epoch, tmp_path, monkeypatch):
    saved = []
    real_save = engine.save_training_checkpoint
    monkeypatch.setattr(engine, "save_training_checkpoint",
                        lambda folder, state, keep: saved.append((state["epoch"], keep)) or real_save(folder, state, keep))
    out = train(replace(config, output_dir=str(tmp_path / "freq"), epochs=4, save_last_freq=2, save_freq=3))
    # last every 2 epochs (after epochs 1 and 3), a kept copy every 3 (epoch 2) and after the last one
    assert saved == [(1, False), (2, True), (3, True)]
    saved.clear()
    out = train(replace(config, output_dir=str(tmp_path / "late"), start_epoch=2, epochs=3, save_freq=1))
    assert saved == [(2, True)] and {m["epoch"] for m in read_metrics(out) if "iteration" in m} == {2}
    # --resume takes precedence over weights_init (the published rule): the run continues
    run = setup(replace(config, output_dir=None, resume=str(copy_run(one_epoch, tmp_path)),
                        weights_init=str(tmp_path / "not-used")))
    assert run.start_epoch == 1 and run.config.weights_init is None
    run.close()
