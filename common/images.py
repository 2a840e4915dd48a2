"""Image files: which files of a folder are images, and how one becomes 8-bit RGB pixels.

The one reader of every image folder in the project: training images (training/data.py), the
autoencoder's images (train_ae_codebook/images.py), inline-FID reference folders
(training/inline_eval.py) and evaluator.py's folder input.

* Which files: those ending in torchvision ImageFolder's extensions (any case), found recursively,
  following links to folders, in torchvision's order (folders by path, then files by name), so
  that image indices match the published implementation's ImageFolder.
* Which pixels: 8-bit RGB. Greyscale, palette and CMYK images are converted; an alpha channel is
  dropped (as torchvision's and ADM's loaders do). 16-bit greyscale is scaled to 8 bits
  (round(v / 257)), where PIL's own conversion would clip everything above 255 to white; PIL reads
  16-bit colour images as their high bytes. Images of 32-bit integers or floating-point values have
  no fixed white level and are refused, as are files PIL cannot decode: `ImageError`, naming the file.
"""
import os
from pathlib import Path

import numpy as np
from PIL import Image

# torchvision.datasets.folder.IMG_EXTENSIONS; torchvision itself is not imported (it pulls in
# torch._dynamo: seconds of start-up for every process that reads images)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
UNSCALED_MODES = {"I": "32-bit integer", "F": "floating-point"}
MAX_16_BIT = 65535


class ImageError(ValueError):
    """A file that is not an image this project reads; the message names the file."""


def list_images(root, extensions: tuple = IMAGE_EXTENSIONS) -> list[Path]:
    """Every file under `root` ending in one of `extensions` (lower case), in ImageFolder's order."""
    return [Path(folder) / name for folder, _, names in sorted(os.walk(root, followlinks=True))
            for name in sorted(names) if name.lower().endswith(extensions)]


def _to_rgb(img: Image.Image, path) -> Image.Image:
    if img.mode in SIXTEEN_BIT_MODES:
        levels = np.asarray(img).astype(np.float64) * (255 / MAX_16_BIT)
        return Image.fromarray(levels.round().astype(np.uint8)).convert("RGB")
    if img.mode in UNSCALED_MODES:
        raise ImageError(f"{path}: {UNSCALED_MODES[img.mode]} pixels (PIL mode {img.mode}) have no fixed white "
                         f"level; save the image with 8 or 16 bits per channel")
    return img.convert("RGB")


def load_rgb(path) -> Image.Image:
    """The image at `path` as 8-bit RGB."""
    try:
        with Image.open(path) as img:
            return _to_rgb(img, path)
    except ImageError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: cannot read the image ({e})") from None


def load_rgb_array(path) -> np.ndarray:
    """uint8 (H, W, 3) pixels of the image at `path`."""
    return np.asarray(load_rgb(path))
