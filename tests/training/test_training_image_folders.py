"""The training images' folder (issue 23): each image counted once through links and loops, none added by
a link up to the data folder, and a plain ImageFolder named like a dataset is told to say
--dataset imagefolder."""
import os
import shutil
from pathlib import Path

import pytest
import yaml

import main
from cli_check import Files, assert_one_line_error, run_main
from conftest import png
from train_support import FAST_ARGS, digits_subset, tiny_config
from training.data import TenCropImageFolder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_subset(tmp_path_factory, per_class=1)


def test_training_data_counts_each_image_once_through_a_loop(tmp_path):
    root = tmp_path / "train"
    for label in ("0", "1"):
        png(root / label / "x.png")
        os.symlink(root / label, root / label / "again")
    data = TenCropImageFolder(root, 32)
    assert [(Path(p).relative_to(root).as_posix(), label) for p, label in data.samples] == [("0/x.png", 0),
                                                                                          ("1/x.png", 1)]


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
    png(root / "0" / "x.png")
    png(root / "1" / "y.png")
    png(root / "1" / "deeper" / "z.png")
    os.symlink(root, root / "0" / "up")
    png(root / "loose.png")  # beside the classes: ImageFolder reads none
    data = TenCropImageFolder(root, 32)
    assert [(Path(p).relative_to(root).as_posix(), label) for p, label in data.samples] == [
        ("0/x.png", 0), ("1/y.png", 1), ("1/deeper/z.png", 1)]
