"""What the demo measures and shows: the held-out per-token NLL, how often a classifier of real
digits recognises the requested class in the generated ones, the class-rows grid, the summary."""
from pathlib import Path

import numpy as np
import torch

from common import npz
from common.digits import digits_arrays
from common.images import load_rgb
from models.checkpoint import load_model
from models.checkpoint_format import LAST, load_checkpoint_file
from sampling.figures import image_grid
from training.data import image_folder_samples, to_model_range

from .config import DIGIT_LEVELS, DIGIT_SIZE, NUM_CLASSES

WHITE = 255
GRID_ZOOM = 2  # the grid's 32 px digits enlarged for the README
GRID_COLUMNS = 10  # samples per class shown in grid.png


def has_ema(run_dir: Path) -> bool:
    """Whether the run kept EMA weights (the demo samples and evaluates with them when it did)."""
    return load_checkpoint_file(run_dir / LAST).get("model_ema") is not None


@torch.no_grad()
def heldout_nll(run_dir: Path, val_dir: Path, batch_size: int) -> dict:
    """Per-token cross entropy (nats) of the held-out images per scale and overall, with the EMA
    weights (when kept) in eval mode (no label drop or random blocks), averaged over images."""
    model = load_model(run_dir, use_ema=has_ema(run_dir))
    _, samples = image_folder_samples(val_dir, model.config.num_classes)
    sums, count = {}, 0
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images = torch.stack([to_model_range(load_rgb(path)) for path, _ in chunk])  # (B, 3, H, W)
        labels = torch.tensor([label for _, label in chunk])
        _, stats = model.loss(model.autoenc.encode_pyramid(images, model.scale_sizes), labels)
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value.item() * len(chunk)
        count += len(chunk)
    means = {k: v / count for k, v in sums.items()}
    return {"num_images": count,
            "per_token_nats": {str(s): means[f"loss_scale_size{s}"] for s in model.scale_sizes},
            "per_token_nats_all_scales": means["loss_total"],
            "top1_accuracy": {str(s): means[f"top1_acc_scale_size{s}"] for s in model.scale_sizes}}


def to_digit_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) dark-on-white images -> (N, 8, 8) in scikit-learn's digit range 0..16 (ink high),
    by averaging blocks (H a multiple of 8): the inverse of common/digits.py's inversion and upscaling."""
    n, h, w, _ = images.shape
    grey = images.astype(np.float64).mean(axis=3)  # (N, H, W)
    blocks = grey.reshape(n, DIGIT_SIZE, h // DIGIT_SIZE, DIGIT_SIZE, w // DIGIT_SIZE).mean(axis=(2, 4))
    return (WHITE - blocks) * DIGIT_LEVELS / WHITE


def classify(samples_npz: Path, val_fraction: float, seed: int) -> dict:
    """A logistic regression on the real 8x8 training digits, scored on held-out real digits and
    on the generated ones (their requested class as the truth)."""
    from sklearn.linear_model import LogisticRegression

    train_x, train_y, val_x, val_y = digits_arrays(val_fraction, seed)
    classifier = LogisticRegression(max_iter=5000)
    classifier.fit(train_x.reshape(len(train_x), -1), train_y)
    real = float(classifier.score(val_x.reshape(len(val_x), -1), val_y))
    arrays = npz.read_arrays(samples_npz, ["arr_0", "arr_1"])
    images, labels = arrays["arr_0"], arrays["arr_1"]
    predicted = classifier.predict(to_digit_pixels(images).reshape(len(images), -1))
    per_class = {str(c): float(np.mean(predicted[labels == c] == c)) for c in range(NUM_CLASSES)}
    return {"heldout_real_accuracy": real, "generated_accuracy": float(np.mean(predicted == labels)),
            "generated_accuracy_per_class": per_class, "num_generated": int(len(labels)),
            "num_heldout_real": int(len(val_y))}


def class_rows_grid(samples_npz: Path) -> np.ndarray:
    """One row per class with its first GRID_COLUMNS samples (fewer if there are fewer), enlarged GRID_ZOOM times."""
    arrays = npz.read_arrays(samples_npz, ["arr_0", "arr_1"])
    images, labels = arrays["arr_0"], arrays["arr_1"]
    columns = min(GRID_COLUMNS, min(np.sum(labels == c) for c in range(NUM_CLASSES)))
    rows = [images[labels == c][:columns] for c in range(NUM_CLASSES)]
    grid = image_grid(np.concatenate(rows), ncol=columns)
    return grid.repeat(GRID_ZOOM, axis=0).repeat(GRID_ZOOM, axis=1)


def summary(report: dict) -> str:
    nll, cls = report["heldout_nll"], report["classifier"]
    lines = [f"held-out NLL per token (nats, {nll['num_images']} images): "
             + ", ".join(f"{s}x{s} {v:.3f}" for s, v in nll["per_token_nats"].items())
             + f"; all scales {nll['per_token_nats_all_scales']:.3f}",
             f"recognised as the requested class: {cls['generated_accuracy']:.1%} of {cls['num_generated']} "
             f"generated digits (classifier on held-out real digits: {cls['heldout_real_accuracy']:.1%})",
             "seconds per stage: " + ", ".join(f"{k} {v:.0f}" + (" (reused)" if k in report["reused_stages"] else "")
                                              for k, v in report["seconds_per_stage"].items())
             + f"; this run {report['seconds_this_run']:.0f}",
             f"files: {report['files']['grid']}, {report['files']['checkerboard_steps']}"]
    return "\n".join(lines)
