"""YAML files are read strictly (issue 23): a key given twice, aliases that expand or recurse and deep
nesting are refused in one line naming the file and line, by the reader and by the scripts that read
configs, which then change no file that was there."""
import shutil

import pytest
import yaml

import main
import main_sample
from cli_check import REPO, Files, assert_one_line_error, run_main
from common.yaml_files import load_yaml
from train_support import FAST_ARGS, digits_subset, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_subset(tmp_path_factory, per_class=1)


@pytest.mark.parametrize("text, where", [
    ("args:\n  epochs: 3\n  lr: 0.1\n  epochs: 30\n", "line 4, column 3: key 'epochs' given twice (first on line 2)"),
    ("model: {}\nargs:\n  lr: 0.1\nargs:\n  epochs: 3\n", "line 4, column 1: key 'args' given twice (first on line 2)"),
    ("a: {x: 1, y: 2, x: 3}\n", "line 1, column 17: key 'x' given twice (first on line 1)"),
])
def test_a_key_given_twice_is_refused_naming_the_key_and_line(text, where, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        load_yaml(path)
    assert str(error.value) == f"{path}, {where}"


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each level an alias repeated `width` times, width**levels values in all."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, where", [
    (_alias_bomb(), "line 4, column 10: aliases repeat more than 1000 values (*l2 here)"),
    ("a: &a [1, *a]\n", "line 1, column 11: alias *a refers to a collection that holds it"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),
])
def test_aliases_that_expand_or_recurse_and_deep_nesting_are_refused(text, where, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        load_yaml(path)
    assert str(error.value).startswith(f"{path}") and where in str(error.value) and "\n" not in str(error.value)


def test_what_configs_use_still_reads(tmp_path):
    """A few aliases, a merge key and the published configs read as before."""
    path = tmp_path / "config.yaml"
    path.write_text("base: &b {lr: 0.1, epochs: 3}\nrun:\n  <<: *b\n  epochs: 5\nsame: *b\n")
    assert load_yaml(path) == {"base": {"lr": 0.1, "epochs": 3}, "run": {"lr": 0.1, "epochs": 5},
                               "same": {"lr": 0.1, "epochs": 3}}
    for config in sorted([*(REPO / "configs").glob("*.yaml"), *(REPO / "train_ae_codebook").glob("*.yaml")]):
        assert load_yaml(config) == yaml.safe_load(config.read_text()), config


def _duplicate_epochs(path):
    """A config whose args: section names epochs twice (PyYAML's safe loader keeps the last)."""
    text = path.read_text()
    assert "\nargs:\n" in text
    path.write_text(text.replace("\nargs:\n", "\nargs:\n  epochs: 7\n", 1))
    return path


def test_main_refuses_a_config_with_a_key_given_twice(data, tiny_dir, tmp_path, capfd):
    config = _duplicate_epochs(tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS))
    files = Files(tmp_path)
    result = run_main(main.main, ["--config", config, "--data_path", data, "--output_dir", tmp_path / "out"], capfd)
    assert_one_line_error(result, "main.py", str(config), "key 'epochs' given twice", "line ")
    files.assert_unchanged()


def test_main_sample_refuses_a_checkpoint_config_with_a_key_given_twice(tiny_dir, tmp_path, capfd):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    config = model / "config.yaml"
    assert "\nmodel:\n  " in config.read_text()
    config.write_text(config.read_text().replace("\nmodel:\n", "\nmodel:\n  img_size: 64\n", 1))
    files = Files(tmp_path)
    result = run_main(main_sample.main, ["--checkpoint", model, "--output_dir", tmp_path / "out", "--num_samples",
                                         "2", "--device", "cpu"], capfd)
    assert_one_line_error(result, "main_sample.py", str(config), "key 'img_size' given twice", "line ")
    files.assert_unchanged()


def test_main_refuses_an_alias_bomb_in_a_config(data, tiny_dir, tmp_path, capfd):
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS)
    config.write_text(_alias_bomb() + config.read_text())
    files = Files(tmp_path)
    result = run_main(main.main, ["--config", config, "--data_path", data, "--output_dir", tmp_path / "out"], capfd)
    assert_one_line_error(result, "main.py", str(config), "aliases repeat more than")
    files.assert_unchanged()
