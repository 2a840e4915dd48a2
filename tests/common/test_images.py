"""common/images.py: which files are images, in which order, and how their pixels become 8-bit RGB."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from common import images
from train_ae_codebook.images import ImageFiles
from training.data import Skipped, TenCropImageFolder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _save(path, array, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path, **kw)
    return path


def test_listing_is_recursive_sorted_like_imagefolder_and_follows_links(tmp_path):
    pixel = np.zeros((2, 2, 3), np.uint8)
    root = tmp_path / "root"
    for rel in ("b.png", "A.JPG", "sub/z.webp", "sub/deeper/a.bmp", "a/x.tiff", "notes.txt", "c.gif"):
        if rel.endswith((".txt", ".gif")):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"")
        else:
            _save(root / rel, pixel)
    _save(tmp_path / "elsewhere" / "e.png", pixel)
    os.symlink(tmp_path / "elsewhere", root / "linked")
    got = [p.relative_to(root).as_posix() for p in images.list_images(root)]
    # torchvision's order: folders sorted by path (the root first), files by name within each
    assert got == ["A.JPG", "b.png", "a/x.tiff", "linked/e.png", "sub/z.webp", "sub/deeper/a.bmp"]


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 257, 32896], [40000, 65280, 65535]], np.uint16)
    path = _save(tmp_path / "deep.png", levels)
    with Image.open(path) as img:
        assert img.mode == "I;16"  # what PIL reads back, and what convert("RGB") turns white above 255
    rgb = images.load_rgb_array(path)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].tolist() == [[0, 1, 128], [156, 254, 255]] and (rgb[..., 1] == rgb[..., 0]).all()


def test_eight_bit_modes_become_rgb(tmp_path):
    colour = np.array([[[255, 0, 0], [0, 128, 255]]], np.uint8)
    grey = _save(tmp_path / "grey.png", np.array([[0, 200]], np.uint8))
    palette = tmp_path / "palette.png"
    Image.fromarray(colour).convert("P").save(palette)
    rgba = _save(tmp_path / "rgba.png", np.concatenate([colour, np.full((1, 2, 1), 7, np.uint8)], axis=2))
    assert images.load_rgb_array(grey).tolist() == [[[0, 0, 0], [200, 200, 200]]]
    assert images.load_rgb_array(palette)[0, 0].tolist() == [255, 0, 0]
    assert np.array_equal(images.load_rgb_array(rgba), colour)  # the alpha channel is dropped


@pytest.mark.parametrize("kind", ["float", "int32", "broken"])
def test_unreadable_images_are_refused_naming_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.tiff"
    if kind == "broken":
        path.write_bytes(b"\x00 not an image at all")
    else:
        _save(path, np.full((2, 2), 0.5, np.float32) if kind == "float" else np.full((2, 2), 7, np.int32))
    with pytest.raises(images.ImageError, match=str(path)) as error:
        images.load_rgb(path)
    assert "\n" not in str(error.value)
    if kind != "broken":
        assert "no fixed white level" in str(error.value)


def test_every_image_reader_scales_deep_images_and_refuses_or_skips_float_ones(tmp_path):
    """Training data skips an image it cannot read; the autoencoder's data and evaluator.py refuse it."""
    root = tmp_path / "train"
    _save(root / "0" / "deep.png", np.full((40, 40), 40000, np.uint16))
    _save(root / "0" / "float.tif", np.full((40, 40), 0.5, np.float32))
    data = TenCropImageFolder(root, 32)
    crop, label = data[(0, 0)]
    assert label == 0 and crop.shape == (3, 32, 32)
    assert float(crop.mean()) == pytest.approx(156 / 127.5 - 1, abs=1e-6)  # not white (1.0)
    assert isinstance(data[(1, 0)], Skipped) and data[(1, 0)].path.endswith("float.tif")

    autoencoder_data = ImageFiles(root, 32)
    assert [p.name for p in autoencoder_data.files] == ["deep.png", "float.tif"]
    assert float(autoencoder_data[0].mean()) == pytest.approx(156 / 127.5 - 1, abs=1e-6)
    with pytest.raises(images.ImageError, match="float.tif: floating-point pixels"):
        autoencoder_data[1]

    # evaluator.py checks a folder's first image before it starts
    (root / "0" / "deep.png").unlink()
    result = subprocess.run([sys.executable, "evaluator.py", str(root), str(root)], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("evaluator.py: error: ") and "float.tif: floating-point pixels" in result.stderr
