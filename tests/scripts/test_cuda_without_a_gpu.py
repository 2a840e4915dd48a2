"""Asking for CUDA on a machine without a GPU is one line naming the option, from every script that
trains or evaluates, and nothing is written (issue 17)."""
import pytest
import torch

import main
from cli_check import Files, assert_one_line_error, run_main
from train_ae_codebook import main_evaluate_ae, main_train_ae
from train_support import FAST_ARGS, digits_subset, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_subset(tmp_path_factory, per_class=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("script, argv, prog", [
    (main.main, ["--device", "cuda"], "main.py"),
    (main_train_ae.main, ["--device", "cuda:0", "--train_all"], "main_train_ae.py"),
    (main_evaluate_ae.main, ["--device", "cuda"], "main_evaluate_ae.py"),
])
def test_cuda_without_a_gpu_is_one_line(script, argv, prog, data, tiny_dir, tmp_path, capfd):
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS)
    ae = tiny_dir / "autoenc"
    common = {main.main: ["--config", config, "--data_path", data, "--output_dir", tmp_path / "out"],
              main_train_ae.main: ["--config", ae / "autoencoder_config.yaml", "--data_path", data, "--output_dir",
                                   tmp_path / "out"],
              main_evaluate_ae.main: ["--autoenc_dir", ae, "--data_path", data]}[script]
    files = Files(tmp_path)
    assert_one_line_error(run_main(script, [*common, *argv], capfd), prog, argv[1], "no CUDA GPU is available")
    files.assert_unchanged()
