"""The digits feature network (evaluation/digits_features.py): its held-out accuracy, its determinism,
and metrics named for it that tell real digits from damaged ones."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from evaluation import evaluate
from evaluation.digits_features import DigitsRecipe, real_digits, train_digits_features, write_digits_reference

DIGITS_KEYS = ["digits_is", "digits_fid", "digits_sfid", "digits_precision", "digits_recall"]


@pytest.fixture(scope="module")
def network():
    return train_digits_features()


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    write_digits_reference(d / "train.npz", "train")
    write_digits_reference(d / "val.npz", "val")
    val = np.load(d / "val.npz")["arr_0"]
    padded = np.pad(val.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = sum(padded[:, i:i + 32, j:j + 32] for i in range(3) for j in range(3)) / 9  # 3x3 box blur
    np.savez(d / "blurred.npz", blurred.round().astype(np.uint8))
    np.savez(d / "repeated.npz", np.repeat(val[:36], 10, axis=0))  # 36 digits, ten times each
    train = np.load(d / "train.npz")
    np.savez(d / "zeros.npz", train["arr_0"][train["arr_1"] == 0])  # one class only
    return d


def test_the_digits_classifier_scores_98_percent_on_held_out_digits(network):
    print(f"digits classifier: held-out accuracy {network.accuracy:.4f}, {network.identity}")
    assert network.accuracy >= 0.98


def test_training_is_deterministic():
    import torch

    recipe = DigitsRecipe(epochs=1)
    state = torch.get_rng_state()
    first, again = train_digits_features(recipe), train_digits_features(recipe)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is left as it was
    assert first.identity == again.identity and first.accuracy == again.accuracy
    assert train_digits_features(DigitsRecipe(epochs=1, seed=1)).identity != first.identity


def test_real_digits_are_the_demo_split():
    digits = real_digits()
    (train, train_labels), (val, val_labels) = digits["train"], digits["val"]
    assert train.shape == (1438, 32, 32, 3) and val.shape == (359, 32, 32, 3) and train.dtype == np.uint8
    assert set(train_labels) == set(range(10)) and len(val_labels) == 359
    assert train[:, 0, 0].min() == 255  # dark ink on white, as common/digits.py renders them


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # one class: fewer images than sFID values
def test_metrics_tell_real_from_damaged_digits(network, batches):
    scores = {name: evaluate(batches / "train.npz", batches / f"{name}.npz", network=network)
              for name in ("val", "blurred", "repeated", "zeros")}
    for name, values in scores.items():
        print(f"{name} against the training digits: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
    real = scores["val"]
    assert list(real) == DIGITS_KEYS
    assert real["digits_is"] > 9 and scores["zeros"]["digits_is"] < 1.5  # 10 classes, confidently told apart
    assert real["digits_precision"] > 0.8 and real["digits_recall"] > 0.8
    # held-out real digits score near the sampling floor of 359 images; damage and lost diversity do not
    assert scores["blurred"]["digits_fid"] > 1.5 * real["digits_fid"]
    assert scores["repeated"]["digits_fid"] > 10 * real["digits_fid"]
    assert scores["repeated"]["digits_recall"] < 0.5 * real["digits_recall"]
    assert scores["zeros"]["digits_recall"] < 0.3 < scores["zeros"]["digits_precision"]


def test_evaluator_command_names_the_digits_metrics(batches, tmp_path):
    out = subprocess.run([sys.executable, "evaluator.py", str(batches / "train.npz"), str(batches / "val.npz"),
                          "--features", "digits", "--output_file", str(tmp_path / "eval.txt"),
                          "--reference_cache", str(tmp_path / "cache")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    labels = [line.split(": ")[0] for line in out.stdout.splitlines()]
    assert labels == ["Digits IS", "Digits FID", "Digits sFID", "Digits Precision", "Digits Recall"]
    assert (tmp_path / "eval.txt").read_text() == out.stdout
    (entry,) = (tmp_path / "cache").iterdir()
    assert str(np.load(entry)["features"]) == "digits"


def test_other_sizes_are_refused_before_training(tmp_path):
    np.savez(tmp_path / "small.npz", np.zeros((5, 16, 16, 3), np.uint8))
    out = subprocess.run([sys.executable, "evaluator.py", str(tmp_path / "small.npz"), str(tmp_path / "small.npz"),
                          "--features", "digits"], cwd=REPO, capture_output=True, text=True, timeout=20)
    assert out.returncode == 2 and out.stderr.strip() == ("evaluator.py: error: the digits feature network reads "
                                                          "32x32 images (demo.py's default size), got 16x16")
