"""The Sampler and the model refuse values that would give a silent wrong result, naming the value: the
Sampler's arguments and teacher-forced images of another size (issue 17)."""
import re

import pytest
import torch

from models import load_model
from models.sampler import NonFiniteSamplingError, Sampler


@pytest.fixture(scope="module")
def sampler(tiny_dir):
    return Sampler(load_model(tiny_dir))


def generators(n):
    return [torch.Generator().manual_seed(i) for i in range(n)]


@pytest.mark.parametrize("arguments, message", [
    (dict(labels=torch.tensor([1, 2, 3]), generator=generators(1)), "1 generators for 3 samples"),
    (dict(batch_size=2, labels=None, generator=generators(3)), "3 generators for 2 samples"),
    (dict(cfg=float("nan")), "cfg must be a finite number >= 0, got nan"),
    (dict(cfg=float("inf")), "cfg must be a finite number >= 0, got inf"),
    (dict(cfg=-1.0), "cfg must be a finite number >= 0, got -1.0"),
    (dict(temperature=float("nan")), "temperature must be a finite number >= 0, got nan"),
    (dict(temperature=float("inf")), "temperature must be a finite number >= 0, got inf"),
    (dict(steps_per_scale=0), "steps_per_scale must be an integer >= 1 or a list of them (one per scale), got 0"),
    (dict(steps_per_scale=-2), "got -2"),
    (dict(steps_per_scale=2.5), "got 2.5"),
    (dict(steps_per_scale=[1, 2, 2.5, 4]), "got [1, 2, 2.5, 4]"),
    (dict(steps_per_scale=[1, 2]), "steps_per_scale has 2 entries but the model has 4 scales"),
    (dict(cfg=1.0, cfg_start_step=-1), "cfg_start_step must be an integer >= 0, got -1"),
    (dict(cfg=1.0, cfg_start_step=1.5), "cfg_start_step must be an integer >= 0, got 1.5"),
    (dict(labels=[1.7]), "labels must be a 1-D sequence of class indices, got torch.float32"),
    (dict(labels=None, batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(cfg=1e39), "cfg must be at most 3.403e+38 (the largest float32, which it is used as), got 1e+39"),
    (dict(temperature=1e-45), "temperature must be 0 or at least 1.175e-38 (the smallest normal float32"),
    (dict(cfg=3.0, cfg_start_step=21), "cfg_start_step 21 is at or beyond the last step: these steps per scale "
                                       "sample 21 steps (0..20)"),
    (dict(cfg=3.0, cfg_start_step=4, steps_per_scale=1), "cfg_start_step 4 is at or beyond the last step"),
])
def test_sampler_refuses_what_it_would_get_silently_wrong(sampler, arguments, message):
    arguments = {"labels": torch.tensor([1]), **arguments}
    with pytest.raises(ValueError) as error:
        sampler.generate(**arguments)
    assert message in str(error.value), str(error.value)


def test_one_generator_per_sample_draws_each_sample_from_its_own(sampler):
    # the same sample whatever the batch it is drawn in: every row's noise is its generator's
    labels = torch.tensor([3, 5, 7])
    batch = sampler.generate(labels=labels, generator=generators(3), steps_per_scale=2).tokens[-1]
    alone = sampler.generate(labels=labels[2:], generator=generators(3)[2:], steps_per_scale=2).tokens[-1]
    assert torch.equal(batch[2:], alone)


def test_guidance_from_the_last_step_is_accepted(sampler):
    # one step per scale on the tiny model's 4 scales: steps 0..3, so step 3 is the last
    labels = torch.tensor([1])
    guided = sampler.generate(labels=labels, cfg=3.0, cfg_start_step=3, steps_per_scale=1, generator=generators(1))
    plain = sampler.generate(labels=labels, cfg=0.0, steps_per_scale=1, generator=generators(1))
    assert guided.images.shape == (1, 3, 32, 32) and torch.isfinite(guided.images).all()
    assert len(guided.tokens) == 4
    for before_guidance, unguided in zip(guided.tokens[:3], plain.tokens[:3]):  # guidance starts at step 3 only
        assert torch.equal(before_guidance, unguided)


@pytest.mark.parametrize("scale, settings, message", [
    (100.0, dict(cfg=3e38), "non-finite probabilities: cfg 3e+38 makes the guided logits overflow float32"),
    (1.0, dict(cfg=3e38, temperature=0.01), "non-finite probabilities: temperature 0.01 makes logits / temperature "
                                            "overflow float32"),
    (float("nan"), dict(cfg=1.5), "non-finite probabilities: the model's logits are NaN or infinite"),
])
def test_non_finite_probabilities_name_the_setting(tiny_dir, scale, settings, message):
    model = load_model(tiny_dir)
    logits = model.logits
    model.logits = lambda h: logits(h) * scale  # the tiny model's logits stay below 2: larger ones overflow sooner
    with pytest.raises(NonFiniteSamplingError, match=re.escape(message)):
        Sampler(model).generate(labels=torch.tensor([1, 2]), generator=generators(2), **settings)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (1, 3, 16, 16), (1, 1, 32, 32), (3, 32, 32)])
def test_teacher_forced_logits_refuses_images_of_another_size(sampler, shape):
    with pytest.raises(ValueError, match=r"images must be \(B, 3, 32, 32\) for this 32 px model, got"):
        sampler.model.teacher_forced_logits(torch.zeros(shape), torch.tensor([0]))
    assert sampler.model.teacher_forced_logits(torch.zeros(1, 3, 32, 32), torch.tensor([0])).shape[0] == 1
