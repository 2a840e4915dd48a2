"""pretrained_models/download.sh (download.py, models/hub.py) against a Hub cache laid out like the
published repository (pretrained_models/<model>/<file> in deigen/checkerboardgen), offline."""
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cli_check import SCRIPT_ENV
from common.files import TEMPORARY_NAME
from hub_cache import lay_out_cache
from models.checkpoint import checkpoint_paths
from models.hub import PUBLISHED_REPO

REPO = Path(__file__).resolve().parents[2]
PUBLISHED_SUMS = REPO / "pretrained_models" / "SHA256SUMS"


def _sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _setup(tmp_path, sums, layout="pretrained_models"):
    """A checkout's pretrained_models/ with `sums` as its SHA256SUMS, and a Hub cache of the published
    repository holding "content of <rel>" for every file under <layout>/<rel>."""
    scripts = tmp_path / "checkout" / "pretrained_models"
    scripts.mkdir(parents=True)
    for name in ("download.sh", "download.py"):
        shutil.copy(REPO / "pretrained_models" / name, scripts)
    (scripts / "SHA256SUMS").write_text("".join(f"{h}  {rel}\n" for rel, h in sums.items()))
    lay_out_cache(tmp_path / "hub-cache", PUBLISHED_REPO,
                  {os.path.normpath(f"{layout}/{rel}"): f"content of {rel}".encode() for rel in sums})
    return scripts


def _run(scripts, *names, **env):
    env = {**SCRIPT_ENV, "HF_HUB_CACHE": str(scripts.parents[1] / "hub-cache"), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(["bash", str(scripts / "download.sh"), *names], capture_output=True, text=True, env=env)


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_published_checksums_are_the_issued_ones():
    sums = dict(reversed(line.split("  ")) for line in PUBLISHED_SUMS.read_text().splitlines())
    assert sums["checkerboard-L-2x/checkpoint-last.pth"].startswith("d0b1c226")
    assert len(sums) == 6 and all(len(h) == 64 for h in sums.values())


def test_the_published_layout_is_fetched(tmp_path):
    """Every published file, from where the published repository keeps it; a rerun keeps them."""
    rels = [line.split("  ")[1] for line in PUBLISHED_SUMS.read_text().splitlines()]
    scripts = _setup(tmp_path, {rel: _sha(f"content of {rel}") for rel in rels})
    result = _run(scripts)
    assert result.returncode == 0, result.stderr
    for rel in rels:
        assert (scripts / rel).read_text() == f"content of {rel}"
    assert _files(scripts) == sorted(["SHA256SUMS", "download.sh", "download.py", "autoenc", "checkerboard-L-2x",
                                      "checkerboard-L-4x", *rels])
    shutil.rmtree(tmp_path / "hub-cache")  # present files are checked, not fetched again
    again = _run(scripts)
    assert again.returncode == 0 and again.stdout.count("ok (present)") == 6, again.stderr


def test_a_repository_without_the_pretrained_models_folder_is_not_the_published_layout(tmp_path):
    rel = "autoenc/checkpoint.pth"
    scripts = _setup(tmp_path, {rel: _sha(f"content of {rel}")}, layout=".")
    result = _run(scripts, "autoenc")
    assert result.returncode == 1 and f"pretrained_models/{rel}" in result.stderr
    assert _files(scripts) == ["SHA256SUMS", "download.py", "download.sh"]


def test_verified_download_and_refused_mismatch(tmp_path):
    good = "checkerboard-L-2x/config.yaml"
    sums = {good: _sha(f"content of {good}"), "checkerboard-L-2x/checkpoint-last.pth": "0" * 64,
            "autoenc/checkpoint.pth": _sha("content of autoenc/checkpoint.pth"),
            "checkerboard-L-4x/config.yaml": "1" * 64}
    scripts = _setup(tmp_path, sums)
    result = _run(scripts, "checkerboard-L-2x")
    assert result.returncode == 1
    assert (scripts / good).read_text() == f"content of {good}"
    assert (scripts / "autoenc" / "checkpoint.pth").is_file()  # the model's autoencoder comes along
    assert not (scripts / "checkerboard-L-2x" / "checkpoint-last.pth").exists()
    assert not [p for p in scripts.rglob("*") if TEMPORARY_NAME.match(p.name) or p.suffix == ".part"]
    assert "checkpoint-last.pth" in result.stderr and "expected " + "0" * 64 + "; refused" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert not (scripts / "checkerboard-L-4x").exists()


def test_offline_leaves_no_empty_folder_and_no_partial_file(tmp_path):
    rels = ["autoenc/checkpoint.pth", "checkerboard-L-2x/config.yaml"]
    scripts = _setup(tmp_path, {rel: _sha(f"content of {rel}") for rel in rels})
    shutil.rmtree(tmp_path / "hub-cache")
    (scripts / "checkerboard-L-2x").mkdir()
    (scripts / "checkerboard-L-2x" / "notes.txt").write_text("mine")
    result = _run(scripts, "checkerboard-L-2x")
    assert result.returncode == 1 and result.stderr.count("HF_HUB_OFFLINE") == 2, result.stderr
    assert len(result.stderr.splitlines()) == 2  # one line per failure
    # the folder the user had stays, with what was in it; the one the run made is gone again
    assert _files(scripts) == ["SHA256SUMS", "checkerboard-L-2x", "checkerboard-L-2x/notes.txt", "download.py",
                               "download.sh"]


def test_a_file_the_user_has_is_never_overwritten(tmp_path):
    rel = "autoenc/checkpoint.pth"
    scripts = _setup(tmp_path, {rel: _sha(f"content of {rel}")})
    (scripts / "autoenc").mkdir()
    (scripts / rel).write_text("my own autoencoder")
    result = _run(scripts, "autoenc")
    assert result.returncode == 1 and "already there" in result.stderr and "left as it is" in result.stderr
    assert (scripts / rel).read_text() == "my own autoencoder"


def test_a_killed_downloads_temporary_is_removed_by_the_next_run(tmp_path):
    rel = "autoenc/checkpoint.pth"
    scripts = _setup(tmp_path, {rel: _sha(f"content of {rel}")})
    (scripts / "autoenc").mkdir()
    leftover = scripts / "autoenc" / ".checkpoint.pth.4242-0a1b2c3d.tmp"
    leftover.write_text("half a download")
    assert TEMPORARY_NAME.match(leftover.name)
    result = _run(scripts, "autoenc")
    assert result.returncode == 0, result.stderr
    assert _files(scripts / "autoenc") == ["checkpoint.pth"]


def test_an_unknown_model_name_is_refused(tmp_path):
    scripts = _setup(tmp_path, {"autoenc/checkpoint.pth": "0" * 64})
    result = _run(scripts, "checkerboard-XL")
    assert result.returncode == 2 and "unknown model 'checkerboard-XL'" in result.stderr


def test_missing_checkpoint_names_the_download_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="bash pretrained_models/download.sh checkerboard-L-2x`, or load "
                                                "checkerboard-L-2x from the Hugging Face Hub by its name"):
        checkpoint_paths(tmp_path / "pretrained_models" / "checkerboard-L-2x")
    with pytest.raises(FileNotFoundError) as elsewhere:
        checkpoint_paths(tmp_path / "run")
    assert "download.sh" not in str(elsewhere.value)
