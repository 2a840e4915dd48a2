"""A sampling config's values are checked once, where they enter: when the config is made (the command
line's `make`, or a constructor call in code), then once against the model (`plan_for`); the run's
draws check nothing again (before, every batch re-ran Sampler.generate's checks, a host sync for the
label range among them). Sampler.generate, the entry for direct calls, checks its arguments."""
import dataclasses

import pytest
import torch

import models.sampler
import sampling.config
from common.config import Layer, make
from models import load_model
from models.sampler import Sampler
from sampling.config import SampleConfig
from sampling.run import sample


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(tiny_dir)


@pytest.fixture
def counted(monkeypatch):
    """Counts of the config's field checks (recheck), the sampler's argument checks (finite_number)
    and its label check (check_labels)."""
    counts = {"config": 0, "sampler": 0, "labels": 0}

    def counting(name, module, attribute):
        original = getattr(module, attribute)

        def wrapper(*args, **kwargs):
            counts[name] += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(module, attribute, wrapper)

    counting("config", sampling.config, "recheck")
    counting("sampler", models.sampler, "finite_number")
    counting("labels", models.sampler.CheckerboardGenerator, "check_labels")
    return counts


def test_a_sampling_run_checks_its_config_where_it_is_made_and_not_again(tiny, tmp_path, counted):
    config = SampleConfig(checkpoint="", output_dir=str(tmp_path / "run"), device="cpu", cfg=1.5, cfg_start_step=2,
                          num_samples=6, batch_size=2, classes=[1, 2, 3], steps_per_scale=2)
    assert counted == {"config": 1, "sampler": 0, "labels": 0}
    assert sample(config, model=tiny).samples_npz.is_file()  # three batches
    assert counted == {"config": 1, "sampler": 0, "labels": 0}


def test_a_config_from_the_command_line_is_checked_once(counted):
    make(SampleConfig, Layer({"cfg": "1.5", "num_samples": "4"}, from_text=True))
    assert counted["config"] == 1


def test_a_checked_config_stays_checked(tmp_path):
    config = SampleConfig(output_dir=str(tmp_path), cfg=1.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.cfg = float("nan")
    with pytest.raises(ValueError, match="cfg must be a number, got nan"):
        dataclasses.replace(config, cfg=float("nan"))


def test_a_direct_call_of_the_sampler_is_checked_at_its_entry(tiny, counted):
    Sampler(tiny).generate(labels=torch.tensor([1, 2]), cfg=1.5, cfg_start_step=2, steps_per_scale=2)
    assert counted["sampler"] == 2 and counted["labels"] == 1  # cfg and temperature; the labels' range
