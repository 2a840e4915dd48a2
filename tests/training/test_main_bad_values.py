"""main.py checks the type and range of every config and command-line value before anything is written
(issue 17): non-zero exit, one line naming the file, key or value, no traceback, no file changed."""
import pytest
import yaml

import main
from cli_check import Files, assert_one_line_error, run_main
from train_support import FAST_ARGS, digits_subset, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_subset(tmp_path_factory, per_class=1)


def _config(tmp_path, tiny_dir, model=None, autoenc_params=None, **args):
    path = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **{**FAST_ARGS, **args})
    document = yaml.safe_load(path.read_text())
    document["model"].update(model or {})
    document["model"]["autoenc"]["params"].update(autoenc_params or {})
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# (args: section or command line changes, fragments of the line) for main.py
MAIN_CASES = {
    "--cfg nan": (["--cfg", "nan"], ["--cfg must be a list of numbers, got 'nan'"]),
    "--cfg inf": (["--cfg", "1.5,inf"], ["--cfg must be a list of numbers, got '1.5,inf'"]),
    "--temperature nan": (["--temperature", "nan"], ["--temperature must be a number, got 'nan'"]),
    "--steps_per_scale 0": (["--steps_per_scale", "0"], ["--steps_per_scale must be >= 1, got 0"]),
    "--steps_per_scale 2.5": (["--steps_per_scale", "2.5"], ["--steps_per_scale must be an integer, got '2.5'"]),
    "--cfg_start_step -1": (["--cfg_start_step", "-1"], ["--cfg_start_step must be >= 0, got -1"]),
    "--seed -1": (["--seed", "-1"], ["--seed must be >= 0, got -1"]),
    "--start_epoch": (["--start_epoch", "5", "--epochs", "3"], ["start_epoch 5 must be < epochs 3"]),
    "--device foo": (["--device", "foo"], ["--device must be one of cuda, cpu, got 'foo'"]),
    "--cfg 1e39": (["--cfg", "1e39"], ["--cfg must be at most 3.403e+38 (the largest float32, which it is used as), "
                                       "got 1e+39"]),
    "--temperature 1e-45": (["--temperature", "1e-45"], ["--temperature must be 0 or at least 1.175e-38", "1e-45"]),
    "--cfg_start_step beyond": (["--eval_freq", "1", "--cfg_start_step", "13"],
                                ["cfg_start_step 13 is at or beyond the last step", "sample 13 steps"]),
    "args.min_lr": ({"lr_schedule": "cosine", "lr": 0.001, "min_lr": 0.01},
                    ["min_lr 0.01 is above lr 0.001: the cosine schedule would climb"]),
    "args.batch_size": ({"batch_size": "eight"}, ["tiny.yaml: args.batch_size must be an integer, got 'eight'"]),
    "args.lr": ({"lr": ".inf"}, ["tiny.yaml: args.lr must be a number, got '.inf'"]),
    "args.ema_rate": ({"ema_rate": 1.5}, ["tiny.yaml: args.ema_rate must be < 1, got 1.5"]),
    "args.betas": ({"betas": [0.9]}, ["betas must be two values, got [0.9]"]),
    "args.pin_mem": ({"pin_mem": "no"}, ["tiny.yaml: args.pin_mem must be true or false, got 'no'"]),
    "model.img_size": ({"model": {"img_size": "abc"}}, ["tiny.yaml: model.img_size: expected an integer >= 1, "
                                                        "got 'abc'"]),
    "model.class_cond": ({"model": {"class_cond": "no"}}, ["model.class_cond: expected true or false, got 'no'"]),
    "model.uncond_training_prob": ({"model": {"uncond_training_prob": 2.0}}, ["model.uncond_training_prob", "2.0"]),
    "model.random_replace": ({"model": {"random_replace": -0.5}}, ["model.random_replace", "-0.5"]),
    "model.scale_ratio": ({"model": {"scale_ratio": float("inf")}}, ["model.scale_ratio", "inf"]),
    "heads": ({"model": {"llama_config": {"hidden_size": 64, "num_attention_heads": 5}}},
              ["model.llama_config.num_attention_heads", "a divisor of hidden_size 64", "got 5"]),
    "model.autoenc.params": ({"autoenc_params": {"embed_dim": "x"}},
                             ["tiny.yaml: model.autoenc.params.embed_dim must be an integer, got 'x'"]),
}


@pytest.mark.parametrize("case", MAIN_CASES)
def test_main_refuses_a_bad_value_before_writing_anything(case, data, tiny_dir, tmp_path, capfd):
    changes, fragments = MAIN_CASES[case]
    argv = changes if isinstance(changes, list) else []
    yaml_changes = changes if isinstance(changes, dict) else {}
    config = _config(tmp_path, tiny_dir, yaml_changes.pop("model", None), yaml_changes.pop("autoenc_params", None),
                     **yaml_changes)
    files = Files(tmp_path)
    result = run_main(main.main, ["--config", config, "--data_path", data, "--output_dir", tmp_path / "out", *argv],
                      capfd)
    assert_one_line_error(result, "main.py", *fragments)
    files.assert_unchanged()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option", ["--output_dir", "--output_root", "--log_dir", "--data_path"])
def test_a_file_where_a_folder_belongs_is_one_line(option, data, tiny_dir, tmp_path, capfd):
    config = _config(tmp_path, tiny_dir)
    a_file = tmp_path / "a_file"
    a_file.write_text("mine\n")
    argv = {"--config": config, "--data_path": data, "--output_dir": tmp_path / "out", option: a_file}
    files = Files(tmp_path)
    result = run_main(main.main, [x for pair in argv.items() for x in pair], capfd)
    assert_one_line_error(result, "main.py", f"{option} {a_file} is a file, not a folder")
    files.assert_unchanged()
