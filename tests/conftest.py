import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# Parity fixtures: small models in the published layout with the numbers the published
# implementation computes for them (tests/fixtures/README.md). They live in the repository so a
# fresh clone tests itself.
FIXTURES = REPO / "tests" / "fixtures"
PARITY_FIXTURES = ("tiny_2x", "tiny_options", "tiny_single")


def dead_pid() -> int:
    """The pid of a process that has ended, for the name of a killed writer's temporary file (only a
    dead writer's temporaries are removed: common/files.py)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def png(path: Path, value: int = 0, size: int = 40) -> Path:
    """A new size x size PNG of one grey `value` at `path`, its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def published_keys_dir() -> Path:
    """Every state-dict key and shape of the published S-2x, L-2x and L-4x checkpoints."""
    return FIXTURES / "published_keys"


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return FIXTURES / "tiny_2x"


@pytest.fixture(scope="session", params=PARITY_FIXTURES)
def parity_dir(request) -> Path:
    """Each parity fixture in turn (tests/fixtures/README.md)."""
    return FIXTURES / request.param


@pytest.fixture(scope="session")
def tiny_expected(tiny_dir):
    return torch.load(tiny_dir / "expected.pt", weights_only=True)


# Two threads for a test on its own, one per process when pytest-xdist runs tests side by side (-n 2):
# on two cores, more threads than cores spin-wait for each other.
THREADS = max(1, 2 // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(THREADS)


def pytest_addoption(parser):
    # The README's screenshot of app.py: `pytest tests/interactive/test_app.py --app_model outputs/demo/generator
    # --app_screenshot docs/app.png` (the demo's digits model; the tests' default is tiny_2x).
    parser.addoption("--app_model", default=str(FIXTURES / "tiny_2x"), metavar="FOLDER",
                     help="the model test_app.py launches app.py with (its EMA weights when kept)")
    parser.addoption("--app_screenshot", default=None, metavar="PNG",
                     help="test_app.py's browser test also saves its screenshot here (docs/app.png)")
