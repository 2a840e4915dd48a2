"""Image files: which files of a folder are images, and how one becomes 8-bit RGB pixels.

The one reader of every image folder in the project: training images (training/data.py), the
autoencoder's images (train_ae_codebook/images.py), inline-FID reference folders
(training/inline_eval.py) and evaluator.py's folder input.

* Which files: those ending in torchvision ImageFolder's extensions (any case), found recursively,
  following links to folders, in torchvision's order (folders by path, then files by name), so
  that image indices match the published implementation's ImageFolder. Each real folder is listed
  once, under the first of its paths in that order: a link back to a folder above (a loop) would
  otherwise list its images again at every depth the system resolves (about 40). A name with an
  image extension that is not a regular file (a FIFO, which would block its reader forever, a
  socket, a device) is refused: `ImageError`, naming it.
* Which pixels: 8-bit RGB. Greyscale, palette and CMYK images are converted; an alpha channel is
  dropped (as torchvision's and ADM's loaders do). 16-bit greyscale is scaled to 8 bits
  (round(v / 257)), where PIL's own conversion would clip everything above 255 to white; PIL reads
  16-bit colour images as their high bytes. Images of 32-bit integers or floating-point values have
  no fixed white level and are refused, as are files PIL cannot decode: `ImageError`, naming the file.
"""
import heapq
import os
import stat
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
    """Every file under `root` ending in one of `extensions` (lower case), in ImageFolder's order
    (sorted(os.walk(root, followlinks=True)), without the folders already listed)."""
    found, seen = [], set()
    pending = [os.fspath(root)]
    while pending:
        # A folder's path sorts after its parent's, so the heap yields folders in the listing's order
        # and the first path of a real folder to come out is the one that lists it.
        folder = heapq.heappop(pending)
        try:
            with os.scandir(folder) as entries:
                entries = sorted(entries, key=lambda e: e.name)
            real = os.stat(folder)
        except OSError:  # as os.walk: a folder that cannot be read lists nothing
            continue
        if (real.st_dev, real.st_ino) in seen:
            continue
        seen.add((real.st_dev, real.st_ino))
        for entry in entries:
            if _is_folder(entry):
                heapq.heappush(pending, entry.path)
            elif entry.name.lower().endswith(extensions):
                _check_regular(entry)
                found.append(Path(entry.path))
    return found


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows a link
    except OSError:
        return False


def _check_regular(entry: os.DirEntry):
    """A file, or a link to one; a link to nothing passes (reading it is an ImageError naming it)."""
    if entry.is_file():  # from the folder listing's file types: no system call for most entries
        return
    try:
        mode = entry.stat().st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise _not_regular(entry.path)


def _not_regular(path) -> ImageError:
    return ImageError(f"{path}: not a regular file (images are read from files only)")


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
        if not stat.S_ISREG(os.stat(path).st_mode):  # listed files are checked; CelebA's and Food101's not
            raise _not_regular(path)
        with Image.open(path) as img:
            return _to_rgb(img, path)
    except ImageError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: cannot read the image ({e})") from None


def load_rgb_array(path) -> np.ndarray:
    """uint8 (H, W, 3) pixels of the image at `path`."""
    return np.asarray(load_rgb(path))
