"""A generator built to train from scratch starts from the published implementation's initial
weights: the same random draws in the same order, overwritten in the same order, tensor by tensor
(tests/fixtures/published_init, made by the published code)."""
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from models.checkpoint import build_generator

FIXTURES = Path(__file__).parents[1] / "fixtures"
PUBLISHED = json.loads((FIXTURES / "published_init" / "stats.json").read_text())


def built_from_scratch(variant: dict):
    """(state dict without the autoencoder, the next four random numbers) of a model built as the
    published main.py builds one: the seed, then the autoencoder, then the generator."""
    folder = FIXTURES / variant["fixture"]
    section = yaml.safe_load((folder / "config.yaml").read_text())["model"]
    section.update(variant["model_overrides"])
    torch.manual_seed(PUBLISHED["seed"])
    model = build_generator(section, folder)
    after = torch.rand(4).tolist()
    return {k: v for k, v in model.state_dict().items() if not k.startswith("autoenc.")}, after


def close(ours: float, published: float) -> bool:
    # Equal bit for bit on the machine that wrote the fixture; the margin is for a CPU whose vector
    # kernels round the last bit of a normal draw differently.
    return math.isclose(ours, published, rel_tol=1e-6, abs_tol=1e-7)


@pytest.mark.parametrize("name", sorted(PUBLISHED["variants"]))
def test_initial_weights_are_the_published_ones(name):
    variant = PUBLISHED["variants"][name]
    state, after = built_from_scratch(variant)
    expected = variant["tensors"]
    assert sorted(state) == sorted(expected)
    wrong = []
    for key, stats in expected.items():
        tensor = state[key]
        if list(tensor.shape) != stats["shape"]:
            wrong.append(f"{key}: shape {list(tensor.shape)}, published {stats['shape']}")
            continue
        if tensor.numel() == 0:
            continue
        flat = tensor.double().flatten()
        ours = {"mean": flat.mean().item(), "std": flat.std().item() if flat.numel() > 1 else 0.0,
                "min": flat.min().item(), "max": flat.max().item()}
        for stat, value in ours.items():
            if not close(value, stats[stat]):
                wrong.append(f"{key}: {stat} {value:.6g}, published {stats[stat]:.6g}")
        if not all(close(a, b) for a, b in zip(flat[:4].tolist(), stats["first"])):
            wrong.append(f"{key}: first values {flat[:4].tolist()}, published {stats['first']}")
    assert not wrong, "\n".join(wrong)
    # The construction made as many draws as the published one, so whatever is drawn next (the
    # first batch's random regularisers) starts from the same place in the stream.
    assert all(close(a, b) for a, b in zip(after, variant["rand_after_build"])), (after, variant["rand_after_build"])
