"""Static checks of every Python file: code the CPU suite cannot run (CUDA graphs, NCCL, bf16 paths)
still has its names defined and its imports used."""
import subprocess
from pathlib import Path

from pyflakes.api import checkPath
from pyflakes.reporter import Reporter

from conftest import REPO


class Collect:
    def __init__(self):
        self.lines = []

    def write(self, text):
        self.lines += [line for line in text.splitlines() if line.strip()]


def python_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    return [REPO / name for name in listed if (REPO / name).is_file()]


def test_pyflakes_finds_nothing():
    found = Collect()
    reporter = Reporter(found, found)
    for path in python_files():
        checkPath(str(path), reporter)
    assert not found.lines, "\n".join(found.lines)


def test_an_undefined_name_is_found(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def replay():\n    return graph_outputs\n")
    found = Collect()
    checkPath(str(bad), Reporter(found, found))
    assert any("undefined name 'graph_outputs'" in line for line in found.lines)
