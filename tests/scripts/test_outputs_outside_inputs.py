"""No script writes into the images it reads (issue 23): an output folder inside the training or
reference images, or reached through a link, is refused in one line and no file that was there changes."""
import os
import shutil
from pathlib import Path

import pytest

import main
import main_sweep
from cli_check import REPO, Files, assert_one_line_error, run_main
from conftest import png
from train_ae_codebook import main_train_ae
from train_support import FAST_ARGS, digits_subset, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_subset(tmp_path_factory, per_class=1)


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
        png(reference / f"{i}.png", 60 * i, size=32)
    files = Files(tmp_path)
    result = run_main(main_sweep.main, ["--checkpoint", REPO / "tests" / "fixtures" / "tiny_2x", "--reference",
                                        reference, "--features", "digits", "--output_dir", reference / "sweep",
                                        "--cfg", "1.0", "--steps_per_scale", "2", "--num_samples", "20", "--device",
                                        "cpu"], capfd)
    assert_one_line_error(result, "main_sweep.py", f"--output_dir {reference / 'sweep'} is inside --reference "
                                                   f"{reference}")
    files.assert_unchanged()
