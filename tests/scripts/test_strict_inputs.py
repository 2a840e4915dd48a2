"""One strict reader per kind of input (issue 23): YAML files, image folders, paths given by the user and
output folders beside the data. Each refusal is one line naming the file, key or value; a command exits
non-zero, prints no traceback and changes no file that was there."""
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import evaluator
import main
import main_sample
import main_sweep
from cli_check import REPO, Files, assert_one_line_error, run_main, run_script
from common import images
from common.config import ArgumentParser, add_arguments, command_line, given_options, make, option, yaml_section
from common.yaml_files import load_yaml
from train_ae_codebook import main_train_ae
from train_support import FAST_ARGS, digits_subset, tiny_config
from training.data import TenCropImageFolder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_subset(tmp_path_factory, per_class=1)


# ---- YAML ---------------------------------------------------------------------------------------
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


# ---- image folders ------------------------------------------------------------------------------
def _png(path, value=0, size=40):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def test_each_real_folder_is_listed_once(tmp_path):
    """A link back to a folder above (a loop) and a second link to a folder already listed add nothing."""
    root = tmp_path / "root"
    _png(root / "a" / "one.png")
    _png(tmp_path / "elsewhere" / "two.png")
    os.symlink(root / "a", root / "a" / "loop")
    os.symlink(root, root / "a" / "up")
    os.symlink(tmp_path / "elsewhere", root / "b_link")
    os.symlink(tmp_path / "elsewhere", root / "c_link")
    got = [p.relative_to(root).as_posix() for p in images.list_images(root)]
    assert got == ["a/one.png", "b_link/two.png"]


def test_training_data_counts_each_image_once_through_a_loop(tmp_path):
    root = tmp_path / "train"
    for label in ("0", "1"):
        _png(root / label / "x.png")
        os.symlink(root / label, root / label / "again")
    data = TenCropImageFolder(root, 32)
    assert [(Path(p).relative_to(root).as_posix(), label) for p, label in data.samples] == [("0/x.png", 0),
                                                                                          ("1/x.png", 1)]


def test_a_fifo_among_the_images_is_refused_naming_it(tmp_path):
    """Reading a FIFO waits for a writer forever: the lister takes regular files only."""
    sample = tmp_path / "sample"
    _png(sample / "b.png")
    os.mkfifo(sample / "a.png")
    with pytest.raises(images.ImageError, match=f"^{sample / 'a.png'}: not a regular file"):
        images.list_images(sample)
    files = Files(tmp_path)
    try:
        result = run_script("evaluator.py", sample, sample, "--features", "digits", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("evaluator.py hangs on a FIFO among the images")
    assert_one_line_error(result, "evaluator.py", str(sample / "a.png"), "not a regular file")
    files.assert_unchanged()


def test_an_image_named_by_a_list_that_is_a_fifo_is_refused(tmp_path):
    """CelebA's and Food101's images come from list files, not the lister: the reader checks too."""
    os.mkfifo(tmp_path / "000001.jpg")
    with pytest.raises(images.ImageError, match=f"^{tmp_path / '000001.jpg'}: not a regular file"):
        images.load_rgb(tmp_path / "000001.jpg")


# ---- paths --------------------------------------------------------------------------------------
@dataclass
class Paths:
    out: str = option("a folder", "out", path=True)
    inputs: list[str] = option("files", [], path=True)
    name: str = option("not a path", "~x")


def test_a_leading_tilde_is_the_home_folder_in_configs_and_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = str(tmp_path / "home")
    from_yaml = make(Paths, yaml_section({"out": "~/runs/a", "inputs": ["~/x.npz", "/abs"], "name": "~n"}, "c.yaml",
                                         "args"))
    assert (from_yaml.out, from_yaml.inputs, from_yaml.name) == (f"{home}/runs/a", [f"{home}/x.npz", "/abs"], "~n")
    parser = add_arguments(ArgumentParser("paths"), Paths)
    given = given_options(parser, ["--out=~/b", "--inputs", "~/y.npz,~/z.npz", "--name", "~m"])
    assert given["out"] == f"{home}/b"  # before any use: scripts open some (--config, --resume) first
    cli = make(Paths, command_line(given))
    assert (cli.out, cli.inputs, cli.name) == (f"{home}/b", [f"{home}/y.npz", f"{home}/z.npz"], "~m")


def test_main_takes_tilde_paths_from_its_config_and_command_line(data, tiny_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    tiny_config(home / "tiny.yaml", tiny_dir, **FAST_ARGS, output_dir="~/runs/a", log_dir="~/tb")
    config = main.parse_config(["--config=~/tiny.yaml", "--data_path", str(data)])
    assert (config.config, config.output_dir, config.log_dir) == (str(home / "tiny.yaml"), str(home / "runs" / "a"),
                                                                  str(home / "tb"))
    assert evaluator.get_args_parser().parse_args(["~/ref.npz", "~/sample"]).ref == str(home / "ref.npz")
    assert main_train_ae.get_args_parser().parse_args(["--config=~/ae.yaml"]).config == str(home / "ae.yaml")


# ---- outputs beside the data ----------------------------------------------------------------------
@pytest.fixture
def own_data(data, tmp_path):
    """A copy of the digits, so that a test that failed to refuse cannot spoil the shared one."""
    return Path(shutil.copytree(data, tmp_path / "data"))


@pytest.mark.parametrize("option_name, inside, shown", [
    ("--output_dir", "train/3/run", "the training images of --data_path"),  # sample grids: class 3's images
    ("--output_dir", "train/run", "the training images of --data_path"),  # an 11th class
    ("--log_dir", "train/0/tb", "the training images of --data_path"),
    ("--output_root", "train/runs", "the training images of --data_path"),
])
def test_main_refuses_an_output_folder_inside_the_training_images(option_name, inside, shown, own_data, tiny_dir,
                                                                  tmp_path, capfd):
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS)
    argv = {"--config": config, "--data_path": own_data, "--output_dir": tmp_path / "out",
            option_name: own_data / inside}
    if option_name == "--output_root":
        del argv["--output_dir"]
    files = Files(tmp_path)
    result = run_main(main.main, [x for pair in argv.items() for x in pair], capfd)
    assert_one_line_error(result, "main.py",
                          f"{option_name} {own_data / inside} is inside {shown} {own_data / 'train'}")
    files.assert_unchanged()


def test_main_refuses_an_output_folder_reached_through_a_link(own_data, tiny_dir, tmp_path, capfd):
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS)
    os.symlink(own_data / "train" / "5", tmp_path / "five")
    files = Files(tmp_path)
    result = run_main(main.main, ["--config", config, "--data_path", own_data, "--output_dir",
                                  tmp_path / "five" / "run"], capfd)
    assert_one_line_error(result, "main.py", f"--output_dir {tmp_path / 'five' / 'run'} is inside", str(own_data))
    files.assert_unchanged()


def test_main_train_ae_refuses_an_output_folder_inside_its_images(own_data, tiny_dir, tmp_path, capfd):
    files = Files(tmp_path)
    result = run_main(main_train_ae.main, ["--config", tiny_dir / "autoenc" / "autoencoder_config.yaml",
                                           "--data_path", own_data, "--output_dir", own_data / "ae", "--train_all",
                                           "--init_steps", "1", "--batch_size", "2", "--device", "cpu"], capfd)
    assert_one_line_error(result, "main_train_ae.py",
                          f"--output_dir {own_data / 'ae'} is inside --data_path {own_data}")
    files.assert_unchanged()


def test_main_sweep_refuses_an_output_folder_inside_its_reference_images(tmp_path, capfd):
    reference = tmp_path / "reference"
    for i in range(4):  # precision and recall need four
        _png(reference / f"{i}.png", 60 * i, size=32)
    files = Files(tmp_path)
    result = run_main(main_sweep.main, ["--checkpoint", REPO / "tests" / "fixtures" / "tiny_2x", "--reference",
                                        reference, "--features", "digits", "--output_dir", reference / "sweep",
                                        "--cfg", "1.0", "--steps_per_scale", "2", "--num_samples", "20", "--device",
                                        "cpu"], capfd)
    assert_one_line_error(result, "main_sweep.py", f"--output_dir {reference / 'sweep'} is inside --reference "
                                                   f"{reference}")
    files.assert_unchanged()


# ---- which dataset --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, class_cond, layout_file", [
    ("celeba", True, "list_eval_partition.txt"),  # was: "set class_cond: false", wrong for an ImageFolder
    ("celeba", False, "list_eval_partition.txt"),
    ("food101", True, "food-101/meta/train.json"),
])
def test_an_imagefolder_named_as_a_dataset_is_told_to_say_dataset_imagefolder(name, class_cond, layout_file, data,
                                                                              tiny_dir, tmp_path, capfd):
    folder = Path(shutil.copytree(data, tmp_path / name))  # train/<class>/, named as the published rule reads
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS)
    if not class_cond:
        document = yaml.safe_load(config.read_text())
        document["model"].update(class_cond=False, num_classes=0)
        config.write_text(yaml.safe_dump(document, sort_keys=False))
    files = Files(tmp_path)
    result = run_main(main.main, ["--config", config, "--data_path", folder, "--output_dir", tmp_path / "out"], capfd)
    line = assert_one_line_error(result, "main.py", str(folder / layout_file), "--dataset imagefolder")
    assert "set class_cond: false" not in line
    files.assert_unchanged()


def test_a_link_from_a_class_up_to_the_data_folder_adds_no_image_to_that_class(tmp_path):
    root = tmp_path / "train"
    _png(root / "0" / "x.png")
    _png(root / "1" / "y.png")
    _png(root / "1" / "deeper" / "z.png")
    os.symlink(root, root / "0" / "up")
    _png(root / "loose.png")  # beside the classes: ImageFolder reads none
    data = TenCropImageFolder(root, 32)
    assert [(Path(p).relative_to(root).as_posix(), label) for p, label in data.samples] == [
        ("0/x.png", 0), ("1/y.png", 1), ("1/deeper/z.png", 1)]
