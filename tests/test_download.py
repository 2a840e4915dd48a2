import hashlib
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setup(tmp_path, sums):
    scripts = tmp_path / "pretrained_models"
    scripts.mkdir()
    shutil.copy(REPO / "pretrained_models" / "download.sh", scripts)
    (scripts / "SHA256SUMS").write_text("".join(f"{h}  {rel}\n" for rel, h in sums.items()))
    remote = tmp_path / "remote"
    for rel in sums:
        (remote / rel).parent.mkdir(parents=True, exist_ok=True)
        (remote / rel).write_text(f"content of {rel}")
    return scripts


def _run(scripts, *names):
    env = {"PATH": "/usr/bin:/bin", "CHECKERBOARD_HF_BASE": f"file://{scripts.parent / 'remote'}"}
    return subprocess.run(["bash", str(scripts / "download.sh"), *names], capture_output=True, text=True, env=env)


def _sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def test_published_checksums_are_the_issued_ones():
    sums = dict(reversed(line.split("  ")) for line in (REPO / "pretrained_models" / "SHA256SUMS").read_text().splitlines())
    assert sums["checkerboard-L-2x/checkpoint-last.pth"].startswith("d0b1c226")
    assert len(sums) == 6 and all(len(h) == 64 for h in sums.values())


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
    assert not list(scripts.rglob("*.part"))
    assert "checkpoint-last.pth has SHA-256" in result.stderr and "refused" in result.stderr
    assert not (scripts / "checkerboard-L-4x").exists()


def test_unknown_model_name(tmp_path):
    scripts = _setup(tmp_path, {"autoenc/checkpoint.pth": "0" * 64})
    result = _run(scripts, "checkerboard-XL")
    assert result.returncode == 2 and "unknown model 'checkerboard-XL'" in result.stderr
