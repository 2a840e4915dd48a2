"""A feature network for the 32 px digits of demo.py: a small CNN classifier trained on the real digits.

Inception features of 32 px digits say little (the graph was trained on 299 px photographs), so the
demo's images are scored in the feature space of a classifier that knows digits: FID, sFID,
precision and recall on its penultimate layer, IS on its class probabilities. These numbers are
named `digits_fid`, `digits_is`, ... everywhere (evaluation/features.py): they do not compare with
Inception FIDs.

The classifier trains in a few seconds on one CPU thread, from a fixed seed, on the training split
of common/digits.py (the split demo.py trains its generator on), rendered as the demo renders
it; its accuracy on the held-out split is kept with it. One thread makes the weights the same
on any machine with the same torch build; `identity` (a hash of the weights) changes whenever they
do not, so cached statistics are never read with another classifier.
"""
import functools
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.digits import write_digits_imagefolder
from common.files import atomic_write
from common.images import list_images, load_rgb_array

IMAGE_SIZE = 32  # demo.py's default digit size: the network reads its images as they are
NUM_CLASSES = 10
SPATIAL_CHANNELS = 4  # of the second block's 8x8 map: 256 values for sFID (ADM keeps 7 Inception channels)
WHITE = 1.0  # the background in the network's input range [-1, 1]


@dataclass(frozen=True)
class DigitsRecipe:
    """How the classifier is trained. Measured on the 2-core CPU machine (2026-11-23): held-out
    accuracy 100%, 99.7%, 99.7% with seeds 0, 1, 2, in about 5 s; in trials of this design a width
    of 8, or 10 epochs, lost up to 2 points."""
    width: int = 16  # channels of the first block; the next two have 2x and 4x
    features: int = 64  # penultimate layer: the pool features
    epochs: int = 15
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 2  # random translation (pixels) of each training batch
    seed: int = 0
    val_fraction: float = 0.2  # demo.py's split (common/digits.py)
    split_seed: int = 0


class DigitsClassifier(nn.Module):
    """Three conv blocks (32 -> 16 -> 8 -> 4 px), a penultimate layer, the class logits."""

    def __init__(self, width: int, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.penultimate = nn.Linear(4 * width * (IMAGE_SIZE // 8) ** 2, features)
        self.head = nn.Linear(features, NUM_CLASSES)

    def forward(self, x):
        """x (B, 3, 32, 32) in [-1, 1] -> logits (B, 10), pool (B, F), spatial map (B, 2W, 8, 8).

        The pool features are the penultimate layer before its ReLU: after it, a third of the units
        are zero on every real digit, which leaves FID blind in those directions."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, W, 16, 16)
        spatial = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 2W, 8, 8)
        x = F.max_pool2d(F.relu(self.conv3(spatial)), 2)  # (B, 4W, 4, 4)
        pool = self.penultimate(x.flatten(1))  # (B, F)
        return self.head(F.relu(pool)), pool, spatial


def check_image_shape(shape: tuple):
    if tuple(shape) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"the digits feature network reads {IMAGE_SIZE}x{IMAGE_SIZE} images "
                         f"(demo.py's default size), got {shape[0]}x{shape[1]}")


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def real_digits(val_fraction: float = 0.2, seed: int = 0) -> dict:
    """The real digits exactly as demo.py trains on them, by split: {"train": (images, labels), "val": ...},
    uint8 (N, 32, 32, 3) images (through the PNG files common/digits.py writes) and their labels.
    Read-only arrays, made once per process."""
    return _real_digits(float(val_fraction), int(seed))


@functools.lru_cache(maxsize=2)
def _real_digits(val_fraction: float, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_digits_imagefolder(tmp, IMAGE_SIZE, val_fraction, seed)
        splits = {}
        for split in ("train", "val"):
            files = list_images(root / split)
            images = np.stack([load_rgb_array(p) for p in files])
            labels = np.array([int(p.parent.name) for p in files])
            images.flags.writeable = labels.flags.writeable = False
            splits[split] = images, labels
    return splits


def write_digits_reference(path, split: str = "train", val_fraction: float = 0.2, seed: int = 0) -> Path:
    """An ADM-layout batch of the real digits of `split` (arr_0 images, arr_1 labels), written atomically."""
    images, labels = real_digits(val_fraction, seed)[split]
    return atomic_write(path, lambda f: np.savez(f, arr_0=images, arr_1=labels))


def _train(recipe: DigitsRecipe, images: np.ndarray, labels: np.ndarray) -> DigitsClassifier:
    g = torch.Generator().manual_seed(recipe.seed)
    with torch.random.fork_rng(devices=[]):  # the layers' initial weights, leaving the caller's stream as it was
        torch.manual_seed(recipe.seed)
        model = DigitsClassifier(recipe.width, recipe.features)
    x, y = to_input(images), torch.tensor(labels)
    steps_per_epoch = -(-len(x) // recipe.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    s = recipe.max_shift
    padded = F.pad(x, (s, s, s, s), value=WHITE)  # (N, 3, 32 + 2s, 32 + 2s)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=g)
        for lo in range(0, len(x), recipe.batch_size):
            idx = order[lo:lo + recipe.batch_size]
            dy, dx = torch.randint(0, 2 * s + 1, (2,), generator=g).tolist()
            batch = padded[idx, :, dy:dy + IMAGE_SIZE, dx:dx + IMAGE_SIZE]  # (b, 3, 32, 32)
            loss = F.cross_entropy(model(batch)[0], y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


class DigitsFeatures:
    """The trained classifier as a feature network (evaluation/features.py); `accuracy` is its
    share of correct classes on the held-out real digits."""

    name = "digits"

    def __init__(self, model: DigitsClassifier, accuracy: float):
        self.model, self.accuracy = model, accuracy
        weights = b"".join(t.numpy().tobytes() for t in model.state_dict().values())
        self.identity = f"digits-{hashlib.sha256(weights).hexdigest()[:16]}"

    def check_image_shape(self, shape):
        check_image_shape(shape)

    @torch.no_grad()
    def _forward(self, images):
        return self.model(to_input(images))

    def activations(self, batches, total=None, desc=None):
        """Pool features (N, F) and the first SPATIAL_CHANNELS of the 8x8 map (N, 8*8*4) of uint8 NHWC batches."""
        pools, spatials = [], []
        for batch in batches:
            _, pool, spatial = self._forward(batch)
            pools.append(pool.double().numpy())
            spatials.append(spatial[:, :SPATIAL_CHANNELS].flatten(1).double().numpy())
        return np.concatenate(pools), np.concatenate(spatials)

    @torch.no_grad()
    def class_probs(self, pool):
        logits = self.model.head(F.relu(torch.from_numpy(np.asarray(pool, np.float32))))
        return torch.softmax(logits.double(), 1).numpy()


def train_digits_features(recipe: DigitsRecipe = DigitsRecipe()) -> DigitsFeatures:
    """Train the classifier (one CPU thread, seeded) and score it on the held-out real digits."""
    digits = real_digits(recipe.val_fraction, recipe.split_seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _train(recipe, *digits["train"])
    finally:
        torch.set_num_threads(threads)
    val_images, val_labels = digits["val"]
    with torch.no_grad():
        predicted = model(to_input(val_images))[0].argmax(1).numpy()
    return DigitsFeatures(model, float((predicted == val_labels).mean()))
