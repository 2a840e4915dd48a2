import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The parity fixtures live in the team's shared folder beside the checkout; CI clones
# main with shared/ next to it. A missing folder is an error, never a skip: the
# exactness tests are the point of this suite.
SHARED = Path(os.environ.get("CHECKERBOARD_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "SPEC.md").is_file():
        raise FileNotFoundError(f"shared folder not found at {SHARED} (set CHECKERBOARD_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def tiny_dir(shared_dir) -> Path:
    return shared_dir / "fixtures" / "reference" / "tiny_2x"


@pytest.fixture(scope="session")
def tiny_expected(tiny_dir):
    return torch.load(tiny_dir / "expected.pt", weights_only=True)


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)
