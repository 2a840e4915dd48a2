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
from common.config import aliases_of, coerce, kinds_of
from common.lr_schedule import LRSchedule
from training.config import TrainConfig
from training.engine import inline_reference
from training.optimization import build_optimizer, param_groups


# Every argument of the published main.py's get_args_parser with its published default (facts of the
# published code), in a config's args: section, must be accepted.
PUBLISHED_ARGS = dict(
    batch_size=16, epochs=100, eval_freq=0, save_last_freq=1, optimizer="adamw", weight_decay=0.02, lr=None,
    blr=2e-4, min_lr=5e-6, lr_schedule="constant", lr_step_epochs=[], lr_step_factor=0.1, warmup_epochs=0,
    grad_accum_steps=1, ema_rate=0.9999, ema=False, clip_grad=None, eval_batch_size=None, eval_num_samples=10000,
    samples_output_dir=None, samples_only=False, keep_samples=0, cfg=2.0, cfg_start_step=5, temperature=1.0,
    data_path="./data/imagenet", eval_reference_data_path=None, output_root="./outputs", output_dir=None,
    log_dir=None, device="cuda", seed=1, resume="", weights_init="", start_epoch=0, num_workers=4, pin_mem=True,
    world_size=1, local_rank=-1, dist_on_itp=False, dist_url="env://", use_cache=False, create_cache=False,
    cached_path="./data/cached")


def _write(tmp_path, args: dict):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {}, "args": args}))
    return path


def test_every_published_argument_is_accepted_with_its_published_default(tmp_path):
    loaded = TrainConfig.load(_write(tmp_path, PUBLISHED_ARGS))
    defaults = TrainConfig.load(_write(tmp_path, {}))
    for key, value in PUBLISHED_ARGS.items():
        if key in ("device", "resume", "weights_init"):  # "cuda" is ours when available; '' means none
            continue
        expected = [value] if key == "cfg" else value  # a list of guidance values (listarg)
        assert getattr(loaded, key) == expected, key
        assert getattr(defaults, key) == expected, key  # where a key is absent, the published default applies


@pytest.mark.parametrize("name, batch, lr, epochs, steps, factor", [
    ("S", 128, 1e-4, 110, [100, 105], 0.3162278),
    ("L", 64, 5e-5, 205, [200], 0.2),
])
def test_published_configs_carry_the_paper_settings(name, batch, lr, epochs, steps, factor):
    config = TrainConfig.load(REPO / "configs" / f"config_256_{name}.yaml")
    assert (config.batch_size, config.lr, config.epochs) == (batch, lr, epochs)
    assert (config.lr_schedule, config.lr_step_epochs, config.lr_step_factor) == ("step", steps, factor)
    assert config.weight_decay == 0.01 and config.warmup_epochs == 1 and config.optimizer == "adamw"
    assert (config.cfg, config.cfg_start_step, config.eval_freq) == ([2.0], 5, 5)
    # absent from the published configs, so the published defaults
    assert (config.ema, config.clip_grad, config.seed, config.grad_accum_steps) == (False, None, 1, 1)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_configs_args_section_loads_into_the_training_config(name):
    path = REPO / "configs" / name
    given = yaml.safe_load(path.read_text())["args"]
    loaded = TrainConfig.load(path)
    kinds, aliases = kinds_of(TrainConfig), aliases_of(TrainConfig)
    assert given
    for key, value in given.items():  # each value as written, none dropped or left at its default
        field = aliases.get(key, key)
        assert getattr(loaded, field) == coerce(value, kinds[field], key), key


EXPERIMENTS = {  # config -> (the paper's experiment named in its first line, its one change to the S model)
    "config_256_S_ratio_sqrt2.yaml": ("Fig. 5", {"scale_ratio": "sqrt(2)"}),
    "config_256_S_ratio_3.yaml": ("Fig. 5", {"scale_ratio": 3}),
    "config_256_S_ratio_4.yaml": ("Fig. 5", {"scale_ratio": 4}),
    "config_256_S_single_scale.yaml": ("Fig. 5", {"single_scale": True}),
    "config_256_S_mixing_0.yaml": ("Table 2", {"num_mixing_layers": 0}),
    "config_256_S_mixing_all.yaml": ("Table 2", {"num_mixing_layers": "all"}),
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_configs_change_one_model_key_of_the_published_S(name):
    where, change = EXPERIMENTS[name]
    text = (REPO / "configs" / name).read_text()
    assert text.startswith(f"# {where} of the paper")
    published = yaml.safe_load((REPO / "configs" / "config_256_S.yaml").read_text())
    variant = yaml.safe_load(text)
    assert variant["args"] == published["args"]
    assert variant["model"] == {**published["model"], **change}


def test_l4x_config_starts_from_l2x_weights_for_30_epochs():
    config = TrainConfig.load(REPO / "configs" / "config_256_L_4x.yaml")
    assert (config.weights_init, config.epochs) == ("pretrained_models/checkerboard-L-2x", 30)
    model = yaml.safe_load((REPO / "configs" / "config_256_L_4x.yaml").read_text())["model"]
    l2x = yaml.safe_load((REPO / "configs" / "config_256_L.yaml").read_text())["model"]
    assert model["scale_ratio"] == 4 and model["llama_config"] == l2x["llama_config"]


def test_command_line_overrides_the_yaml_and_old_names_are_aliases(tmp_path):
    path = _write(tmp_path, {"lr": "1e-4", "batch_size": 16, "ema": True, "lr_gamma": 0.5, "accum_iter": 2,
                             "grad_clip": 3.0})
    config = parse_config(["--config", str(path), "--batch_size", "4", "--no-ema", "--lr_steps", "3", "5",
                           "--betas", "0.8", "0.9", "--cfg", "1.5,2", "--world-size", "2", "--local-rank", "0",
                           "--no_pin_mem"])
    assert config.lr == 1e-4 and isinstance(config.lr, float)  # YAML reads 1e-4 as a string
    assert (config.batch_size, config.ema, config.lr_step_epochs, config.betas) == (4, False, [3, 5], [0.8, 0.9])
    assert (config.lr_step_factor, config.grad_accum_steps, config.clip_grad) == (0.5, 2, 3.0)
    assert (config.cfg, config.world_size, config.local_rank, config.pin_mem) == ([1.5, 2.0], 2, 0, False)
    assert config.config == str(path)
    assert parse_config(["--config", str(path), "--lr", "none"]).lr is None  # back to the blr rule


def test_unknown_or_ill_typed_keys_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"c.yaml: unknown key 'args.learning_rate'"):
        TrainConfig.load(_write(tmp_path, {"learning_rate": 0.1}))
    with pytest.raises(ValueError, match=r"c.yaml: args.batch_size must be an integer, got 'many'"):
        TrainConfig.load(_write(tmp_path, {"batch_size": "many"}))
    with pytest.raises(ValueError, match="c.yaml: args.lr_schedule must be one of constant, step, cosine, got 'linear'"):
        TrainConfig.load(_write(tmp_path, {"lr_schedule": "linear"}))
    with pytest.raises(ValueError, match=r"c.yaml: args.lr_gamma and args.lr_step_factor name the same option"):
        TrainConfig.load(_write(tmp_path, {"lr_step_factor": 0.1, "lr_gamma": 0.2}))
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--config", str(tmp_path / "c.yaml"), "--no_such_option", "1"])


def test_the_base_learning_rate_scales_with_the_global_batch():
    config = TrainConfig(batch_size=32, blr=1e-4, grad_accum_steps=4)
    # batch_size x processes / 256; gradient accumulation does not enter (the published code)
    assert config.resolved_lr(world_size=8) == pytest.approx(1e-4 * 32 * 8 / 256)
    assert config.resolved_lr(world_size=1) == pytest.approx(1e-4 * 32 / 256)
    assert TrainConfig(batch_size=32, blr=1e-4, lr=3e-4).resolved_lr(world_size=8) == 3e-4


def test_the_published_step_schedule_warms_up_and_steps_down():
    config = TrainConfig.load(REPO / "configs" / "config_256_S.yaml")
    schedule = LRSchedule.of(config)
    assert schedule(0.5) == pytest.approx(0.5e-4)  # one warm-up epoch
    assert schedule(1.0) == schedule(99.99) == pytest.approx(1e-4)
    assert schedule(100.0) == pytest.approx(1e-4 * 0.3162278)
    assert schedule(105.5) == pytest.approx(1e-4 * 0.3162278 ** 2)
    custom = LRSchedule.of(TrainConfig(lr=2.0, lr_schedule="step", lr_step_epochs=[3, 5], lr_step_factor=0.5))
    assert [custom(e) for e in (0, 2.9, 3, 4.9, 5, 9)] == [2.0, 2.0, 1.0, 1.0, 0.5, 0.5]


def test_lr_schedules_are_read_per_iteration():
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


def test_the_optimizer_is_adamw_unless_adam_is_asked():
    model = torch.nn.Linear(4, 4)
    adam = build_optimizer(model, 1e-3, 0.02, (0.9, 0.95), "cpu", "adam")
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["weight_decay"] == 0.02
    assert type(build_optimizer(model, 1e-3, 0.02, (0.9, 0.95), "cpu")) is torch.optim.AdamW


def test_inline_fid_reference_default_is_the_published_layout(tmp_path):
    config = TrainConfig(data_path=str(tmp_path))
    assert inline_reference(config, 256) is None  # no reference folder: no inline FID/IS
    (tmp_path / "eval_reference" / "256").mkdir(parents=True)
    assert inline_reference(config, 256) == str(tmp_path / "eval_reference" / "256")
    assert inline_reference(TrainConfig(data_path=str(tmp_path), eval_reference_data_path="r.npz"), 256) == "r.npz"
