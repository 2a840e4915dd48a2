"""The generator's attributes have their own names (`transformer`), its state dicts the published keys
(`llama.*`), both ways: what this code writes is what the published code reads, and the reverse
(models/checkpoint_format.py's PUBLISHED_KEYS)."""
import pytest
import torch
import torch.nn as nn

from models import load_model
from models.checkpoint_format import load_checkpoint_file, load_state_dict_strict
from training.ema import EMA


class Wrapper(nn.Module):  # as the training loss module, DDP or torch.compile hold the generator
    def __init__(self, model):
        super().__init__()
        self.model = model


@pytest.fixture
def model(tiny_dir):
    return load_model(tiny_dir)


def test_the_transformer_is_named_for_what_it_is_and_saved_under_the_published_keys(model, tiny_dir, tmp_path):
    assert isinstance(model.transformer, nn.Module) and not hasattr(model, "llama")
    assert "transformer.norm.weight" in dict(model.named_parameters())
    published = load_checkpoint_file(tiny_dir / "checkpoint-last.pth")["model"]
    assert list(model.state_dict()) == list(published)  # the same keys in the same order
    assert set(model.state_dict()._metadata) >= {"llama", "llama.layers.0"}
    torch.save({"model": model.state_dict()}, tmp_path / "saved.pth")
    saved = load_checkpoint_file(tmp_path / "saved.pth")["model"]
    assert list(saved) == list(published) and all(torch.equal(saved[k], published[k]) for k in published)


def test_a_wrapped_generator_writes_and_reads_the_published_keys_under_its_prefix(model, tiny_dir):
    state = Wrapper(model).state_dict()
    assert "model.llama.norm.weight" in state and not any(".transformer." in k for k in state)
    fresh = load_model(tiny_dir)
    with torch.no_grad():
        fresh.transformer.norm.weight.zero_()
    Wrapper(fresh).load_state_dict(state)
    assert torch.equal(fresh.transformer.norm.weight, model.transformer.norm.weight)


def test_a_state_dict_under_the_attribute_names_is_refused_in_one_line(model):
    ours = {k.replace("llama.", "transformer.", 1): v for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"^ours: state dict does not fit the model \(missing \d+: llama\..*; "
                                         r"unexpected \d+: transformer\."):
        load_state_dict_strict(model, ours, "ours")


def test_the_ema_averages_stand_in_the_published_keys(model):
    ema = EMA(model, rate=0.5)
    with torch.no_grad():
        model.transformer.norm.weight.add_(1.0)
    ema.update()
    state = ema.state_dict(model)
    assert list(state) == list(model.state_dict())
    assert torch.allclose(state["llama.norm.weight"], model.transformer.norm.weight - 0.5)
    ema.load_state_dict(state)  # the keys it writes are the keys it reads
