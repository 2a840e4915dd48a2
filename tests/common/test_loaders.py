"""One reader per kind of file (issue 17): every unusable checkpoint or YAML file is one line naming the
file and the problem, through every loader and entry point that reads one."""
import argparse
import io
import os
import shutil
import zipfile

import numpy as np
import pytest
import torch
import yaml

import main
from cli_check import Files, assert_one_line_error, run_main
from models.checkpoint_format import load_checkpoint_file
from common.json_files import read_json
from common.npz import iter_rows
from common.yaml_files import load_yaml
from models import load_model
from models.autoencoder import AutoencoderConfig, load_autoencoder
from train_ae_codebook import main_evaluate_ae, main_train_ae
from train_ae_codebook.perceptual import PerceptualLoss
from train_support import FAST_ARGS, digits_subset, tiny_config


class Payload:
    """What a crafted checkpoint smuggles in: loading it unsafely would call os.system."""

    def __reduce__(self):
        return os.system, ("echo this must never run",)


def write_bad_checkpoint(path, kind: str, good):
    """A checkpoint file that cannot be used, of one `kind`; `good`: a whole checkpoint to cut from."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "cut short":
        path.write_bytes(good.read_bytes()[:3000])
    elif kind == "text":
        path.write_text("model: not a checkpoint\n")
    elif kind == "numpy":
        np.save(path.with_suffix(".npy"), np.zeros(3))
        path.with_suffix(".npy").rename(path)
    elif kind == "foreign zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("data.txt", "x")
    elif kind == "code":
        torch.save({"model": {}, "payload": Payload()}, path)
    return path


BAD_KINDS = {  # kind: what the line says
    "empty": "the file is empty",
    "cut short": "cut short",
    "text": "not a PyTorch checkpoint",
    "numpy": "not a PyTorch checkpoint",
    "foreign zip": "not a readable PyTorch checkpoint",
    "code": "refused: it asks to import posix.system",
}


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_every_unusable_checkpoint_is_one_line_naming_the_file(kind, tiny_dir, tmp_path):
    path = write_bad_checkpoint(tmp_path / "c.pth", kind, tiny_dir / "checkpoint-last.pth")
    with pytest.raises(ValueError) as error:
        load_checkpoint_file(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and BAD_KINDS[kind] in message and "\n" not in message, message
    # torch's own message for a refused pickle advises loading with weights_only=False: never passed on
    assert "weights_only" not in message and "False" not in message


def test_missing_folder_and_whole_checkpoints(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"^autoencoder checkpoint not found: {tmp_path / 'no.pth'}$"):
        load_checkpoint_file(tmp_path / "no.pth", what="autoencoder checkpoint")
    with pytest.raises(IsADirectoryError, match=f"^checkpoint {tmp_path} is a folder, not a file$"):
        load_checkpoint_file(tmp_path)
    assert load_checkpoint_file(tiny_dir / "checkpoint-last.pth")["model"]
    torch.save({"args": argparse.Namespace(epochs=3)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert load_checkpoint_file(tmp_path / "legacy.pth")["args"].epochs == 3  # torch's older format, as published
    assert load_checkpoint_file(tmp_path / "legacy.pth", mmap=True)["args"].epochs == 3  # read whole: no mapping
    assert load_checkpoint_file(tiny_dir / "checkpoint-last.pth", mmap=True)["model"]


@pytest.mark.parametrize("text, where", [
    ("model:\n  img_size: 32\n  autoenc: [a, b\nargs: {}\n", "line 4, column 5: expected ',' or ']'"),
    ("model:\n  img_size: 32\n\tbad: 1\n", "line 3, column 1: found character '\\t'"),
    ("model: !!python/object/apply:os.system ['echo never']\n", "line 1, column 8: could not determine a constructor"),
    ("a: caf\xe9\n".encode("latin-1"), "not a YAML text file"),
])
def test_every_unusable_yaml_file_is_one_line_with_file_and_line(text, where, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError) as error:
        load_yaml(path)
    assert str(error.value).startswith(f"{path}") and where in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match=f"^config not found: {tmp_path / 'no.yaml'}$"):
        load_yaml(tmp_path / "no.yaml")


@pytest.mark.parametrize("content, expected, message", [
    (b'{"cfg": 1.5', dict, "is not valid JSON (Expecting"),
    (b"\xff\xfe\x00", dict, "is not valid JSON ("),
    (b"[1, 2]", dict, "is not a sampling run's record"),
    (b'{"a": 1}', list, "is not a JSON list"),
])
def test_every_unusable_json_file_is_one_line_naming_it(content, expected, message, tmp_path):
    path = tmp_path / "record.json"
    path.write_bytes(content)
    what = "a sampling run's record" if expected is dict else ""
    with pytest.raises(ValueError) as error:
        read_json(path, expected, what)
    assert str(error.value).startswith(f"{path} {message}") and "\n" not in str(error.value), error.value
    (tmp_path / "ok.json").write_text('{"a": [1]}')
    assert read_json(tmp_path / "ok.json", dict) == {"a": [1]}


# ---- through every loader of the project ------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_subset(tmp_path_factory, per_class=1)


@pytest.fixture
def model_copy(tiny_dir, tmp_path):
    """A writable copy of the tiny_2x model folder (config.yaml, checkpoint-last.pth, autoenc/)."""
    folder = shutil.copytree(tiny_dir, tmp_path / "model")
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def _cli_cases(model, data, tmp_path):
    """(script main, argv, the bad file) for each command-line loader of a checkpoint or YAML file."""
    config = tiny_config(tmp_path / "tiny.yaml", model, **FAST_ARGS)
    ae = model / "autoenc"
    out = tmp_path / "out"
    common = ["--data_path", data, "--output_dir", out]
    ae_args = [*common, "--device", "cpu", "--init_steps", "1", "--batch_size", "2"]
    return {
        "resume": (main.main, ["--resume", model, *common], model / "checkpoint-last.pth"),
        "weights_init": (main.main, ["--config", config, "--weights_init", model, *common],
                         model / "checkpoint-last.pth"),
        "autoencoder checkpoint": (main.main, ["--config", config, *common], ae / "checkpoint.pth"),
        "autoencoder config": (main.main, ["--config", config, *common], ae / "autoencoder_config.yaml"),
        "config": (main.main, ["--config", config, *common], config),
        "init_checkpoint": (main_train_ae.main, ["--config", ae / "autoencoder_config.yaml", "--init_checkpoint",
                                                 ae / "checkpoint.pth", *ae_args], ae / "checkpoint.pth"),
        "perceptual_weights": (main_train_ae.main, ["--config", ae / "autoencoder_config.yaml", "--train_all",
                                                    "--perceptual_weights", ae / "checkpoint.pth", *ae_args],
                               ae / "checkpoint.pth"),
        "evaluate checkpoint": (main_evaluate_ae.main, ["--autoenc_dir", ae, "--data_path", data, "--device", "cpu"],
                                ae / "checkpoint.pth"),
        "evaluate config": (main_evaluate_ae.main, ["--autoenc_dir", ae, "--data_path", data, "--device", "cpu"],
                            ae / "autoencoder_config.yaml"),
    }


LOADERS = ["resume", "weights_init", "autoencoder checkpoint", "autoencoder config", "config", "init_checkpoint",
           "perceptual_weights", "evaluate checkpoint", "evaluate config"]
PROGS = {main.main: "main.py", main_train_ae.main: "main_train_ae.py", main_evaluate_ae.main: "main_evaluate_ae.py"}


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("kind", ["cut short", "code"])
def test_every_entry_point_names_a_bad_file_in_one_line(loader, kind, model_copy, tiny_dir, data, tmp_path, capfd):
    script, argv, bad = _cli_cases(model_copy, data, tmp_path)[loader]
    if bad.suffix == ".yaml":
        bad.write_text(bad.read_text() + "\n  broken: [1, 2\n" if kind == "cut short" else
                       "model: !!python/object/apply:os.system ['echo never']\n")
        expected = "line" if kind == "cut short" else "could not determine a constructor"
    else:
        write_bad_checkpoint(bad, kind, tiny_dir / "checkpoint-last.pth")
        expected = BAD_KINDS[kind]
    files = Files(tmp_path)
    result = run_main(script, argv, capfd)
    line = assert_one_line_error(result, PROGS[script], str(bad), expected)
    assert "weights_only" not in line
    files.assert_unchanged()


def test_library_loaders_raise_one_line_errors(model_copy, tiny_dir):
    write_bad_checkpoint(model_copy / "checkpoint-last.pth", "cut short", tiny_dir / "checkpoint-last.pth")
    with pytest.raises(ValueError, match=f"^{model_copy / 'checkpoint-last.pth'}: cut short"):
        load_model(model_copy)
    ae = model_copy / "autoenc"
    write_bad_checkpoint(ae / "checkpoint.pth", "code", None)
    with pytest.raises(ValueError, match=f"^{ae / 'checkpoint.pth'}: refused"):
        load_autoencoder(ae / "autoencoder_config.yaml", ae / "checkpoint.pth")
    with pytest.raises(ValueError, match=f"^{ae / 'checkpoint.pth'}: refused"):
        PerceptualLoss(ae / "checkpoint.pth")


def test_resuming_a_checkpoint_without_training_state_names_weights_init(model_copy, data, tmp_path, capfd):
    # a published checkpoint: model weights and args, no optimizer
    ckpt = load_checkpoint_file(model_copy / "checkpoint-last.pth")
    torch.save({"model": ckpt["model"], "args": argparse.Namespace(epochs=1)}, model_copy / "checkpoint-last.pth")
    files = Files(tmp_path)
    result = run_main(main.main, ["--resume", model_copy, "--data_path", data, "--output_dir", tmp_path / "out"],
                      capfd)
    assert_one_line_error(result, "main.py", f"{model_copy / 'checkpoint-last.pth'} holds no training state",
                          f"--weights_init {model_copy} instead of --resume")
    files.assert_unchanged()


@pytest.mark.parametrize("params, shown", [
    ({"embed_dim": "x"}, "model.params.embed_dim must be an integer, got 'x'"),
    ({"ddconfig": {"ch": 0}}, "model.params.ddconfig.ch must be >= 1, got 0"),
    ({"ddconfig": {"dropout": 2.0}}, "model.params.ddconfig.dropout must be < 1, got 2.0"),
    ({"ddconfig": {"ch_mult": "x"}}, "model.params.ddconfig.ch_mult must be a list of integers, got 'x'"),
    ({"normalize": "no"}, "model.params.normalize must be true or false, got 'no'"),
    ({"ddconfig": {"ch": 33}}, "ch 33 x ch_mult [1, 2, 2] gives 33 channels, not a multiple of GroupNorm's 32"),
])
def test_autoencoder_config_values_are_checked(params, shown, tiny_dir, tmp_path):
    document = yaml.safe_load((tiny_dir / "autoenc" / "autoencoder_config.yaml").read_text())
    for key, value in params.items():
        if isinstance(value, dict):
            document["model"]["params"][key].update(value)
        else:
            document["model"]["params"][key] = value
    path = tmp_path / "autoencoder_config.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ValueError) as error:
        AutoencoderConfig.from_yaml(path)
    assert str(error.value).startswith(str(path)) and shown in str(error.value), str(error.value)


def _npz_cases(tmp_path):
    """{name: (file, what the line says)} of .npz files that cannot be read."""
    np.savez(tmp_path / "good.npz", arr_0=np.arange(24, dtype=np.uint8).reshape(4, 2, 3))
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    np.savez(tmp_path / "objects.npz", arr_0=np.array([{"a": 1}, None], dtype=object))
    header = io.BytesIO()
    np.save(header, np.zeros((2, 3), np.uint8))
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as z:  # the header announces more rows than there are
        z.writestr("arr_0.npy", header.getvalue().replace(b"(2, 3)", b"(9, 3)"))
    with zipfile.ZipFile(tmp_path / "junk.npz", "w") as z:
        z.writestr("arr_0.npy", b"not an array")
    return {"cut": "not an .npz file", "objects": "holds Python objects (a pickle), which are never loaded",
            "short": "'arr_0' is cut short: 9 rows announced, the data ends in row 2",
            "junk": "'arr_0' is not a readable .npy array"}


def test_every_unusable_npz_is_one_line_naming_the_file(tmp_path):
    for name, expected in _npz_cases(tmp_path).items():
        path = tmp_path / f"{name}.npz"
        with pytest.raises(ValueError) as error:
            list(iter_rows(path, "arr_0", 2))
        assert str(error.value).startswith(f"{path}: ") and expected in str(error.value), str(error.value)
    assert [r.shape for r in iter_rows(tmp_path / "good.npz", "arr_0", 3)] == [(3, 2, 3), (1, 2, 3)]
