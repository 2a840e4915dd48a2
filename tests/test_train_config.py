"""Training configuration, schedules, optimizer groups, and main.py's one-line errors."""
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from main import get_args_parser, parse_config
from train_support import REPO, digits_subset, tiny_config
from common.lr_schedule import LRSchedule
from training.config import TrainConfig
from training.engine import param_groups


@pytest.mark.parametrize("name, batch, lr, epochs, steps, gamma", [
    ("S", 128, 1e-4, 110, [100, 105], 0.316),
    ("L", 64, 5e-5, 205, [200], 0.2),
    ("L_4x", 64, 5e-5, 205, [200], 0.2),
])
def test_published_configs_carry_the_paper_settings(name, batch, lr, epochs, steps, gamma):
    config = TrainConfig.load(REPO / "configs" / f"config_256_{name}.yaml")
    assert (config.batch_size, config.lr, config.epochs) == (batch, lr, epochs)
    assert (config.lr_schedule, config.lr_steps, config.lr_gamma) == ("step", steps, gamma)
    assert config.betas == [0.9, 0.95] and config.weight_decay == 0.01 and config.warmup_epochs == 1
    assert (config.cfg, config.cfg_start_step) == (2.0, 5)


def test_tiny_cpu_config_is_valid():
    config = TrainConfig.load(REPO / "configs" / "config_tiny_cpu.yaml")
    assert config.device == "cpu" and config.ema


def test_command_line_overrides_the_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {}, "args": {"lr": "1e-4", "batch_size": 16, "ema": True}}))
    config = parse_config(["--config", str(path), "--batch_size", "4", "--no-ema", "--lr_steps", "3", "5",
                           "--betas", "0.8", "0.9"])
    assert config.lr == 1e-4 and isinstance(config.lr, float)  # YAML reads 1e-4 as a string
    assert (config.batch_size, config.ema, config.lr_steps, config.betas) == (4, False, [3, 5], [0.8, 0.9])
    assert config.config == str(path)


def test_unknown_or_ill_typed_keys_are_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {}, "args": {"learning_rate": 0.1}}))
    with pytest.raises(ValueError, match=r"c.yaml: unknown key 'args.learning_rate'"):
        TrainConfig.load(path)
    path.write_text(yaml.safe_dump({"model": {}, "args": {"batch_size": "many"}}))
    with pytest.raises(ValueError, match=r"args.batch_size must be an integer, got 'many'"):
        TrainConfig.load(path)
    path.write_text(yaml.safe_dump({"model": {}, "args": {"lr_schedule": "linear"}}))
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, step, cosine, got 'linear'"):
        TrainConfig.load(path)
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--config", str(path), "--no_such_option", "1"])


def test_lr_schedules_per_iteration():
    step = LRSchedule(1.0, 10, "step", warmup_epochs=1, steps=(5, 8), gamma=0.1)
    assert step(0.0) == 0.0 and step(0.25) == pytest.approx(0.25)  # warm-up within the first epoch
    assert step(1.0) == 1.0 and step(4.99) == 1.0
    assert step(5.0) == pytest.approx(0.1) and step(8.5) == pytest.approx(0.01)
    cosine = LRSchedule(1.0, 11, "cosine", warmup_epochs=1, min_lr=0.1)
    assert cosine(1.0) == pytest.approx(1.0) and cosine(6.0) == pytest.approx(0.55)
    assert cosine(11.0) == pytest.approx(0.1)
    assert LRSchedule(0.5, 3, "constant")(2.7) == 0.5


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model.register_parameter("token", torch.nn.Parameter(torch.zeros(4)))
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[1].weight)}
    assert len(no_decay["params"]) == 4  # linear bias, norm weight and bias, the 1-D token


def _run_main(*args):
    return subprocess.run([sys.executable, "main.py", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    root = digits_subset(tmp_path_factory, per_class=1)
    for extra in sorted((root / "train").iterdir())[3:]:
        for f in extra.iterdir():
            f.unlink()
        extra.rmdir()
    return root


@pytest.mark.parametrize("case", ["missing data path", "wrong class count", "unknown config key"])
def test_bad_input_ends_with_one_clear_line(case, tmp_path, tiny_dir, three_classes):
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir)
    data, expected = three_classes, None
    if case == "missing data path":
        data, expected = tmp_path / "nowhere", f"data path not found: {tmp_path / 'nowhere'}"
    elif case == "wrong class count":
        expected = "has 3 class folders but the config's model.num_classes is 10"
    else:
        with open(config, "a") as f:
            f.write("  bacth_size: 3\n")
        expected = "unknown key 'args.bacth_size'"
    result = _run_main("--config", config, "--data_path", data, "--output_dir", tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("main.py: error: ") and expected in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_cosine_schedule_ends_at_min_lr():
    schedule = LRSchedule(2.0, 4, "cosine", warmup_epochs=0.0, min_lr=0.0)
    values = [schedule(e / 10) for e in range(41)]
    assert values[0] == 2.0 and values[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(values, values[1:])) and not any(math.isnan(v) for v in values)
