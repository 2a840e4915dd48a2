"""Image folders are listed strictly (issue 23): each real folder once through links and loops, and
regular files only: a FIFO among the images (or named by a list file) is refused naming it."""
import os
import subprocess

import pytest

from cli_check import Files, assert_one_line_error, run_script
from common import images
from conftest import png


def test_each_real_folder_is_listed_once(tmp_path):
    """A link back to a folder above (a loop) and a second link to a folder already listed add nothing."""
    root = tmp_path / "root"
    png(root / "a" / "one.png")
    png(tmp_path / "elsewhere" / "two.png")
    os.symlink(root / "a", root / "a" / "loop")
    os.symlink(root, root / "a" / "up")
    os.symlink(tmp_path / "elsewhere", root / "b_link")
    os.symlink(tmp_path / "elsewhere", root / "c_link")
    got = [p.relative_to(root).as_posix() for p in images.list_images(root)]
    assert got == ["a/one.png", "b_link/two.png"]


def test_a_fifo_among_the_images_is_refused_naming_it(tmp_path):
    """Reading a FIFO waits for a writer forever: the lister takes regular files only."""
    sample = tmp_path / "sample"
    png(sample / "b.png")
    os.mkfifo(sample / "a.png")
    with pytest.raises(images.ImageError, match=f"^{sample / 'a.png'}: not a regular file"):
        images.list_images(sample)
    files = Files(tmp_path)
    try:
        result = run_script("evaluator.py", sample, sample, "--features", "digits", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("evaluator.py hangs on a FIFO among the images")
    assert_one_line_error(result, "evaluator.py", str(sample / "a.png"), "not a regular file")
    files.assert_unchanged()


def test_an_image_named_by_a_list_that_is_a_fifo_is_refused(tmp_path):
    """CelebA's and Food101's images come from list files, not the lister: the reader checks too."""
    os.mkfifo(tmp_path / "000001.jpg")
    with pytest.raises(images.ImageError, match=f"^{tmp_path / '000001.jpg'}: not a regular file"):
        images.load_rgb(tmp_path / "000001.jpg")
