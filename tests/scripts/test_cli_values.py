"""Types and ranges of every config and command value are checked before anything is written (issue 17):
non-zero exit, one line naming the file, key or value, no traceback, no file changed."""
import errno
import os
import shutil

import pytest
import torch
import yaml

import main
from cli_check import Files, assert_one_line_error, run_main
from train_ae_codebook import main_evaluate_ae, main_train_ae
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("script, argv, prog", [
    (main.main, ["--device", "cuda"], "main.py"),
    (main_train_ae.main, ["--device", "cuda:0", "--train_all"], "main_train_ae.py"),
    (main_evaluate_ae.main, ["--device", "cuda"], "main_evaluate_ae.py"),
])
def test_cuda_without_a_gpu_is_one_line(script, argv, prog, data, tiny_dir, tmp_path, capfd):
    config = _config(tmp_path, tiny_dir)
    ae = tiny_dir / "autoenc"
    common = {main.main: ["--config", config, "--data_path", data, "--output_dir", tmp_path / "out"],
              main_train_ae.main: ["--config", ae / "autoencoder_config.yaml", "--data_path", data, "--output_dir",
                                   tmp_path / "out"],
              main_evaluate_ae.main: ["--autoenc_dir", ae, "--data_path", data]}[script]
    files = Files(tmp_path)
    assert_one_line_error(run_main(script, [*common, *argv], capfd), prog, argv[1], "no CUDA GPU is available")
    files.assert_unchanged()


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
