"""pretrained_models/download.sh against a file:// mirror laid out like the published repository
(<base>/pretrained_models/<model>/<file>)."""
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from common.files import TEMPORARY_NAME
from models.checkpoint import checkpoint_paths

REPO = Path(__file__).resolve().parents[1]
PUBLISHED_SUMS = REPO / "pretrained_models" / "SHA256SUMS"


def _sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _setup(tmp_path, sums, layout="pretrained_models"):
    """A checkout's pretrained_models/ with `sums` as its SHA256SUMS, and a mirror holding
    "content of <rel>" for every file under <mirror>/<layout>/<rel>."""
    scripts = tmp_path / "checkout" / "pretrained_models"
    scripts.mkdir(parents=True)
    shutil.copy(REPO / "pretrained_models" / "download.sh", scripts)
    (scripts / "SHA256SUMS").write_text("".join(f"{h}  {rel}\n" for rel, h in sums.items()))
    for rel in sums:
        remote = tmp_path / "mirror" / layout / rel
        remote.parent.mkdir(parents=True, exist_ok=True)
        remote.write_text(f"content of {rel}")
    return scripts


def _run(scripts, *names, base=None, path_prefix=""):
    base = base or f"file://{scripts.parents[1] / 'mirror'}"
    env = {"PATH": f"{path_prefix}/usr/bin:/bin", "CHECKERBOARD_HF_BASE": base}
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
    assert _files(scripts) == sorted(["SHA256SUMS", "download.sh", "autoenc", "checkerboard-L-2x",
                                      "checkerboard-L-4x", *rels])
    shutil.rmtree(tmp_path / "mirror")  # present files are checked, not fetched again
    again = _run(scripts)
    assert again.returncode == 0 and again.stdout.count("ok (present)") == 6, again.stderr


def test_a_mirror_without_the_pretrained_models_folder_is_not_the_published_layout(tmp_path):
    rel = "autoenc/checkpoint.pth"
    scripts = _setup(tmp_path, {rel: _sha(f"content of {rel}")}, layout=".")
    result = _run(scripts, "autoenc")
    assert result.returncode == 1 and f"pretrained_models/{rel}" in result.stderr
    assert _files(scripts) == ["SHA256SUMS", "download.sh"]


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
    assert "checkpoint-last.pth has SHA-256" in result.stderr and "refused" in result.stderr
    assert not (scripts / "checkerboard-L-4x").exists()


@pytest.mark.parametrize("base", ["file:///nonexistent/mirror", "http://127.0.0.1:9"])
def test_offline_leaves_no_empty_folder_and_no_partial_file(tmp_path, base):
    rels = ["autoenc/checkpoint.pth", "checkerboard-L-2x/config.yaml"]
    scripts = _setup(tmp_path, {rel: _sha(f"content of {rel}") for rel in rels})
    (scripts / "checkerboard-L-2x").mkdir()
    (scripts / "checkerboard-L-2x" / "notes.txt").write_text("mine")
    result = _run(scripts, "checkerboard-L-2x", base=base)
    assert result.returncode == 1 and result.stderr.count("could not fetch") == 2, result.stderr
    # the folder the user had stays, with what was in it; the one the run made is gone again
    assert _files(scripts) == ["SHA256SUMS", "checkerboard-L-2x", "checkerboard-L-2x/notes.txt", "download.sh"]


def test_a_file_the_user_has_is_never_overwritten(tmp_path):
    rel = "autoenc/checkpoint.pth"
    scripts = _setup(tmp_path, {rel: _sha(f"content of {rel}")})
    (scripts / "autoenc").mkdir()
    (scripts / rel).write_text("my own autoencoder")
    result = _run(scripts, "autoenc")
    assert result.returncode == 1 and "already there" in result.stderr and "left as it is" in result.stderr
    assert (scripts / rel).read_text() == "my own autoencoder"


def test_downloads_go_to_temporaries_named_as_common_files_names_them(tmp_path):
    rel = "autoenc/checkpoint.pth"
    scripts = _setup(tmp_path, {rel: _sha(f"content of {rel}")})
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "curl").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {tmp_path / "curl_args"}\nexec /usr/bin/curl "$@"\n')
    (shim / "curl").chmod(0o755)
    result = _run(scripts, "autoenc", path_prefix=f"{shim}:")
    assert result.returncode == 0, result.stderr
    args = (tmp_path / "curl_args").read_text().splitlines()
    written = Path(args[args.index("-o") + 1])
    match = TEMPORARY_NAME.match(written.name)
    assert written.parent == scripts / "autoenc" and match and match["target"] == "checkpoint.pth"
    assert int(match["pid"]) > 0 and not written.exists() and (scripts / rel).is_file()


def test_unknown_model_name(tmp_path):
    scripts = _setup(tmp_path, {"autoenc/checkpoint.pth": "0" * 64})
    result = _run(scripts, "checkerboard-XL")
    assert result.returncode == 2 and "unknown model 'checkerboard-XL'" in result.stderr


def test_missing_checkpoint_names_the_download_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="bash pretrained_models/download.sh checkerboard-L-2x"):
        checkpoint_paths(tmp_path / "pretrained_models" / "checkerboard-L-2x")
    with pytest.raises(FileNotFoundError) as elsewhere:
        checkpoint_paths(tmp_path / "run")
    assert "download.sh" not in str(elsewhere.value)
