"""main_train_ae.py and main_evaluate_ae.py refuse bad values and output paths in one line before
anything is written, never write into another model's folder, and keep an output file made meanwhile
(issues 17, 23)."""
import errno
import os
import shutil

import pytest

from cli_check import Files, assert_one_line_error, run_main
from train_ae_codebook import main_evaluate_ae, main_train_ae
from train_support import digits_subset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_subset(tmp_path_factory, per_class=1)


AE_CASES = {
    "--device foo": (["--device", "foo"], "--device must be cpu, cuda or cuda:N, got 'foo'"),
    "--seed -1": (["--seed", "-1"], "--seed must be >= 0, got -1"),
    "--img_size 0": (["--img_size", "0"], "--img_size must be >= 1, got 0"),
    "--epochs nan": (["--epochs", "nan"], "--epochs must be a number, got 'nan'"),
    "--output_dir a file": (["--output_dir", "{a_file}"], "--output_dir {a_file} is a file, not a folder"),
}


@pytest.mark.parametrize("case", AE_CASES)
def test_main_train_ae_refuses_a_bad_value_before_writing_anything(case, data, tiny_dir, tmp_path, capfd):
    changes, fragment = AE_CASES[case]
    a_file = tmp_path / "a_file"
    a_file.write_text("mine\n")
    argv = ["--config", tiny_dir / "autoenc" / "autoencoder_config.yaml", "--data_path", data, "--output_dir",
            tmp_path / "out", "--train_all", "--init_steps", "1", "--batch_size", "2", "--device", "cpu"]
    argv += [str(c).format(a_file=a_file) for c in changes]
    files = Files(tmp_path)
    result = run_main(main_train_ae.main, argv, capfd)
    assert_one_line_error(result, "main_train_ae.py", fragment.format(a_file=a_file))
    files.assert_unchanged()


def test_main_evaluate_ae_checks_its_output_file_first_and_prints_results_before_a_full_disk(
        data, tiny_dir, tmp_path, capfd, monkeypatch):
    argv = ["--autoenc_dir", tiny_dir / "autoenc", "--data_path", data, "--device", "cpu", "--num_workers", "0"]
    files = Files(tmp_path)
    result = run_main(main_evaluate_ae.main, [*argv, "--output_file", tmp_path / "no" / "r.json"], capfd)
    assert_one_line_error(result, "main_evaluate_ae.py", f"--output_file {tmp_path / 'no' / 'r.json'}: folder "
                                                         f"{tmp_path / 'no'} not found")
    assert result.out == ""  # refused before the evaluation
    (tmp_path / "old.json").write_text("the previous results\n")
    files = Files(tmp_path)
    result = run_main(main_evaluate_ae.main, [*argv, "--output_file", tmp_path / "old.json"], capfd)
    assert_one_line_error(result, "main_evaluate_ae.py", f"--output_file {tmp_path / 'old.json'} exists")
    assert result.out == ""
    files.assert_unchanged()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    result = run_main(main_evaluate_ae.main, [*argv, "--output_file", tmp_path / "r.json"], capfd)
    assert_one_line_error(result, "main_evaluate_ae.py", "No space left on device", code=1)
    assert "PSNR" in result.out and "all scales: codebook usage" in result.out  # the results, printed first
    files.assert_unchanged()


def test_autoencoder_training_never_writes_into_another_models_folder(data, tiny_dir, tmp_path, capfd):
    published = shutil.copytree(tiny_dir / "autoenc", tmp_path / "pretrained_models" / "autoenc")
    files = Files(tmp_path)
    result = run_main(main_train_ae.main, ["--config", tiny_dir / "autoenc" / "autoencoder_config.yaml", "--data_path",
                                           data, "--output_dir", published, "--train_all", "--device", "cpu",
                                           "--init_steps", "1", "--batch_size", "2"], capfd)
    assert_one_line_error(result, "main_train_ae.py", f"--output_dir {published} is not empty "
                                                      f"(autoencoder_config.yaml, checkpoint.pth) and holds no "
                                                      f"checkpoint-last.pth")
    files.assert_unchanged()


def test_an_error_in_a_data_loader_worker_is_its_own_one_line(tiny_dir, tmp_path, capfd):
    # torch re-raises a worker's error with the worker's whole traceback in its text: the line keeps the error
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot the rest of a PNG")
    result = run_main(main_evaluate_ae.main, ["--autoenc_dir", tiny_dir / "autoenc", "--data_path", tmp_path,
                                              "--device", "cpu", "--num_workers", "1"], capfd)
    assert_one_line_error(result, "main_evaluate_ae.py", f"{tmp_path / 'bad.png'}: cannot read the image")


def test_main_evaluate_ae_keeps_an_output_file_made_while_it_evaluated(tmp_path, capfd, monkeypatch):
    """Issue 23: the file is checked to be new at the start; another run writing it meanwhile is not replaced."""
    target = tmp_path / "r.json"
    results = {"scales": [], "codebook_usage": 0.5, "perplexity": 3.0, "num_images": 2}

    def the_other_run_finishes_meanwhile(config):
        target.write_text("the other run's results\n")
        return results

    monkeypatch.setattr(main_evaluate_ae, "evaluate_files", the_other_run_finishes_meanwhile)
    result = run_main(main_evaluate_ae.main, ["--autoenc_dir", tmp_path, "--data_path", tmp_path, "--output_file",
                                              target], capfd)
    assert_one_line_error(result, "main_evaluate_ae.py", f"--output_file {target} exists", code=1)
    assert target.read_text() == "the other run's results\n" and os.listdir(tmp_path) == ["r.json"]
