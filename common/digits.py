"""scikit-learn's bundled handwritten digits as an ImageFolder: real data with no download."""
from pathlib import Path

import numpy as np
from PIL import Image

from common.files import journal_file


def write_digits_imagefolder(root, size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write `root/train/<class>/*.png` and `root/val/<class>/*.png` (RGB, `size` px); returns root.

    The 8x8 digits (16 grey levels) are upscaled bicubically and inverted to dark ink on white.
    The split is fixed by `seed`; an existing complete folder is reused.
    """
    from sklearn.datasets import load_digits

    root = Path(root)
    done = root / ".complete"
    if done.is_file():
        return root
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.images))
    n_val = int(round(len(order) * val_fraction))
    splits = {"val": order[:n_val], "train": order[n_val:]}
    for split, indices in splits.items():
        for i in indices:
            label = int(digits.target[i])
            pixels = (255 - digits.images[i] * (255 / 16)).round().astype(np.uint8)
            img = Image.fromarray(pixels).resize((size, size), Image.BICUBIC).convert("RGB")
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            journal_file(folder / f"{i:04d}.png")
            img.save(folder / f"{i:04d}.png")
    journal_file(done)
    done.write_text(f"size={size} val_fraction={val_fraction} seed={seed}\n")
    return root


def digits_arrays(val_fraction: float = 0.2, seed: int = 0):
    """(train_x, train_y, val_x, val_y) as 8x8 float pixels in [0, 16], the same split as above."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.images))
    n_val = int(round(len(order) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    x, y = digits.images, digits.target
    return x[train], y[train], x[val], y[val]
