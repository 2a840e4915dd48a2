"""common/config.py, the one config-to-CLI mechanism, and every script's --help and one-line errors."""
import argparse
from dataclasses import dataclass

import pytest

import demo
import main
import main_sample
from common.config import (ArgumentParser, ConfigError, Layer, add_arguments, command_line, given_options, make,
                           option, yaml_section)
from train_ae_codebook import main_evaluate_ae, main_train_ae
from train_ae_codebook.train_config import AETrainConfig


@dataclass
class Toy:
    name: str = option("a required name")
    steps: int = option("how many steps", 3, ge=1)
    rate: float | None = option("a rate", None, gt=0, default_text="derived")
    mode: str = option("the mode", "fast", choices=("fast", "slow"))
    flag: bool = option("a switch", True, negative_aliases=("no_flag_old",))
    epochs: list[int] = option("epochs", [], aliases=("old_epochs",))
    per_scale: int | list[int] = option("one or one per scale", 4, ge=1)
    secret: int = option("hidden", 0, hidden=True)

    def validate(self):
        if self.mode == "slow" and self.steps > 10:
            raise ConfigError("slow mode takes at most 10 steps")


def parse(argv) -> Toy:
    parser = add_arguments(ArgumentParser("toy"), Toy)
    return make(Toy, command_line(given_options(parser, argv)))


def test_layers_coerce_and_later_ones_win():
    toy = make(Toy, yaml_section({"name": "a", "steps": "7", "rate": "1e-4", "epochs": 5, "per_scale": [1, 4]},
                                 "c.yaml", "args"), Layer({"steps": 2.0}))
    assert (toy.name, toy.steps, toy.rate, toy.epochs, toy.per_scale) == ("a", 2, 1e-4, [5], [1, 4])
    assert isinstance(toy.steps, int) and isinstance(toy.rate, float)


def test_command_line_lists_bools_aliases_and_none():
    toy = parse(["--name", "x", "--old_epochs", "3", "5", "--per_scale", "1,4,4", "--no-flag", "--rate", "0.5"])
    assert (toy.epochs, toy.per_scale, toy.flag, toy.rate) == ([3, 5], [1, 4, 4], False, 0.5)
    toy = parse(["--name", "x", "--epochs", "3,5", "--per_scale", "2", "--no_flag_old", "--rate", "none"])
    assert (toy.epochs, toy.per_scale, toy.flag, toy.rate) == ([3, 5], 2, False, None)
    assert parse(["--name", "x", "--epochs"]).epochs == []


@pytest.mark.parametrize("layer, message", [
    (yaml_section({"name": "a", "stpes": 3}, "c.yaml", "args"), "c.yaml: unknown key 'args.stpes'"),
    (yaml_section({"name": "a", "steps": "many"}, "c.yaml", "args"), "c.yaml: args.steps must be an integer, got 'many'"),
    (yaml_section({"name": "a", "steps": 2.5}, "c.yaml", "args"), "c.yaml: args.steps must be an integer, got 2.5"),
    (yaml_section({"name": "a", "steps": True}, "c.yaml", "args"), "c.yaml: args.steps must be an integer, got True"),
    (yaml_section({"name": "a", "steps": 0}, "c.yaml", "args"), "c.yaml: args.steps must be >= 1, got 0"),
    (yaml_section({"name": "a", "flag": "yes"}, "c.yaml", "args"), "c.yaml: args.flag must be true or false, got 'yes'"),
    (yaml_section({"name": "a", "rate": 0}, "c.yaml", "args"), "c.yaml: args.rate must be > 0, got 0.0"),
    (yaml_section({"name": "a", "rate": "nan"}, "c.yaml", "args"), "c.yaml: args.rate must be a number, got 'nan'"),
    (yaml_section({"name": "a", "mode": "quick"}, "c.yaml", "args"),
     "c.yaml: args.mode must be one of fast, slow, got 'quick'"),
    (yaml_section({"name": "a", "epochs": [1], "old_epochs": [2]}, "c.yaml", "args"),
     "c.yaml: args.epochs and args.old_epochs name the same option: give one of them"),
    (yaml_section({"name": 3}, "c.yaml", "args"), "c.yaml: args.name must be a string, got 3"),
    (yaml_section({"name": "a", "per_scale": [4, 0]}, "c.yaml", "args"), "c.yaml: args.per_scale must be >= 1, got 0"),
    (command_line({"name": "a", "epochs": ["1,x"]}), "--epochs must be a list of integers, got '1,x'"),
    (command_line({"steps": "3"}), "--name must be given"),
    (command_line({"name": "a", "mode": "slow", "steps": "11"}), "slow mode takes at most 10 steps"),
])
def test_every_bad_value_is_one_line_naming_it(layer, message):
    with pytest.raises(ConfigError) as error:
        make(Toy, layer)
    assert str(error.value) == message


@pytest.mark.parametrize("epochs, message", [(float("inf"), "epochs must be a number, got inf"),
                                            (float("nan"), "epochs must be a number, got nan"),
                                            (0.0, "epochs must be > 0, got 0.0")])
def test_a_config_made_in_python_is_checked_as_make_checks_it(epochs, message):
    config = AETrainConfig(config_path="c.yaml", data_path="d", output_dir="o", train_all=True, epochs=epochs)
    with pytest.raises(ConfigError) as error:
        config.validate()
    assert str(error.value) == message


def test_help_shows_every_default_and_the_aliases():
    text = " ".join(add_arguments(ArgumentParser("toy"), Toy).format_help().split())
    for shown in ("a required name (required)", "how many steps (default: 3)", "a rate (default: derived)",
                  "the mode (default: fast)", "--flag, --no-flag a switch (default: true)",
                  "--epochs [EPOCHS ...], --old_epochs [EPOCHS ...] epochs (default: empty)",
                  "one or one per scale (default: 4)", "--mode {fast,slow}"):
        assert shown in text, shown
    assert "secret" not in text


SCRIPTS = {
    "main.py": (main.get_args_parser, {"--config"}),
    "main_sample.py": (main_sample.get_args_parser, {"--calculate_flops"}),
    "main_train_ae.py": (main_train_ae.get_args_parser, {"--config"}),
    "main_evaluate_ae.py": (main_evaluate_ae.get_args_parser, set()),
    "demo.py": (demo.get_args_parser, set()),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_option_of_every_script_shows_its_default(script):
    make_parser, own = SCRIPTS[script]
    parser = make_parser()
    options = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS
               and not isinstance(a, argparse._HelpAction) and not set(a.option_strings) & own
               and not a.help.startswith("the same as --no-")]
    assert len(options) >= 10
    for action in options:
        assert "(default: " in action.help or "(required" in action.help, (script, action.option_strings)


@pytest.mark.parametrize("script, shown", [
    ("main.py", ["--blr BLR base learning rate", "(default: 0.0002)", "--clip_grad CLIP_GRAD, --grad_clip CLIP_GRAD",
                 "--lr_step_factor LR_STEP_FACTOR, --lr_gamma LR_STEP_FACTOR", "(default: 0.1)",
                 "--grad_accum_steps GRAD_ACCUM_STEPS, --accum_iter GRAD_ACCUM_STEPS", "--ema, --no-ema",
                 "--world_size WORLD_SIZE, --world-size WORLD_SIZE", "--dataset {imagefolder,celeba,food101}"]),
    ("main_sample.py", ["--batch_size BATCH_SIZE samples per generate() call and process (default: 32)",
                        "(default: 2.0 for a class-conditional model, as published; else 0)",
                        "(default: the model's num_blocks_per_scale, as published)"]),
    ("main_train_ae.py", ["--min_size MIN_SIZE smallest image size in pixels drawn for a step (default: 16)",
                          "(required: here or in the config's args: section)"]),
    ("main_evaluate_ae.py", ["--batch_size BATCH_SIZE images per batch (default: 32)"]),
    ("demo.py", ["--samples_per_class SAMPLES_PER_CLASS generated digits per class (default: 30)"]),
])
def test_each_scripts_help_shows_its_key_texts(script, shown):
    text = " ".join(SCRIPTS[script][0]().format_help().split())
    for part in shown:
        assert part in text, part


def _one_line_error(capsys, run) -> tuple[int, str]:
    try:
        code = run()
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return code, err.strip()


@pytest.mark.parametrize("argv, message", [
    (["--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    (["--lr", "fast"], "--lr must be a number, got 'fast'"),
    (["--lr_step_epochs", "100,x"], "--lr_step_epochs must be a list of integers, got '100,x'"),
    (["--ema_rate", "1"], "--ema_rate must be < 1, got 1.0"),
    (["--optimizer", "sgd"], "--optimizer must be one of adamw, adam, got 'sgd'"),
    (["--dist_on_itp"], "dist_on_itp: OpenMPI-launched runs are not supported here"),
    (["--dist_url", "tcp://10.0.0.1:23456"], "dist_url must be env://"),
    (["--no_such_option", "1"], "unrecognized arguments: --no_such_option 1 (see --help)"),
])
def test_main_bad_values_are_one_line_before_anything_is_written(capsys, tmp_path, argv, message):
    out = tmp_path / "out"
    code, err = _one_line_error(capsys, lambda: main.main(["--config", "configs/config_tiny_cpu.yaml",
                                                           "--output_dir", str(out), *argv]))
    assert code == 2 and err.startswith("main.py: error: ") and message in err, err
    assert not out.exists()


@pytest.mark.parametrize("run, message", [
    (lambda d: main_sample.main(["--checkpoint", "c", "--output_dir", d, "--num_samples", "many"]),
     "main_sample.py: error: --num_samples must be an integer, got 'many'"),
    (lambda d: main_sample.main(["--checkpoint", "c", "--output_dir", d, "--temperature", "-1"]),
     "main_sample.py: error: --temperature must be >= 0, got -1.0"),
    (lambda d: main_train_ae.main(["--config", "train_ae_codebook/autoencoder_config_digits.yaml", "--data_path",
                                   "x", "--output_dir", d, "--img_size", "0"]),
     "main_train_ae.py: error: --img_size must be >= 1, got 0"),
    (lambda d: main_train_ae.main(["--config", "train_ae_codebook/autoencoder_config_digits.yaml", "--data_path",
                                   "x", "--output_dir", d, "--epochs", "two"]),
     "main_train_ae.py: error: --epochs must be a number, got 'two'"),
    (lambda d: main_evaluate_ae.main(["--autoenc_dir", "a", "--data_path", "x", "--batch_size", "0"]),
     "main_evaluate_ae.py: error: --batch_size must be >= 1, got 0"),
    (lambda d: demo.main(["--output_dir", d, "--img_size", "0"]), "demo.py: error: --img_size must be >= 8, got 0"),
    (lambda d: demo.main(["--output_dir", d, "--val_fraction", "1.5"]),
     "demo.py: error: --val_fraction must be < 1, got 1.5"),
])
def test_other_scripts_bad_values_are_one_line(capsys, tmp_path, run, message):
    out = tmp_path / "out"
    code, err = _one_line_error(capsys, lambda: run(str(out)))
    assert code == 2 and err == message
    assert not out.exists()
