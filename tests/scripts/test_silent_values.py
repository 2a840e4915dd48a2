"""Values that used to give a silent wrong result are refused, naming the value (issue 17): the Sampler's
arguments, teacher-forced images of another size, and training images none of which decodes."""
import re
import shutil
from dataclasses import replace

import pytest
import torch

import main
import main_sample
from cli_check import Files, assert_one_line_error, run_main
from models import load_model
from models.sampler import NonFiniteSamplingError, Sampler
from train_support import FAST_ARGS, tiny_config
from training import data as training_data
from training.config import TrainConfig
from training.engine import NoTrainingStepError, train


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
    sampler.generate(labels=torch.tensor([1]), cfg=3.0, cfg_start_step=3, steps_per_scale=1)


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


def test_sampling_into_non_finite_probabilities_is_one_line(tiny_dir, tmp_path, capfd):
    (tmp_path / "mine.txt").write_text("the user's\n")
    files = Files(tmp_path)
    result = run_main(main_sample.main, ["--checkpoint", tiny_dir, "--output_dir", tmp_path / "out", "--device", "cpu",
                                         "--num_samples", 2, "--cfg", "3e38", "--temperature", "0.01"], capfd)
    assert_one_line_error(result, "main_sample.py", "temperature 0.01 makes logits / temperature overflow float32",
                          earlier_lines=True)
    files.assert_unchanged(new_files=True)
    assert not (tmp_path / "out" / "samples.npz").exists()


def test_a_checkpoint_holding_nan_weights_is_refused_at_load(tiny_dir, tmp_path, capfd):
    model = shutil.copytree(tiny_dir, tmp_path / "model")
    checkpoint = torch.load(model / "checkpoint-last.pth", weights_only=False)
    name = next(k for k, v in checkpoint["model"].items() if v.is_floating_point() and v.ndim == 2)
    checkpoint["model"][name][0, 0] = float("nan")
    torch.save(checkpoint, model / "checkpoint-last.pth")
    files = Files(tmp_path)
    result = run_main(main_sample.main, ["--checkpoint", model, "--output_dir", tmp_path / "out", "--device", "cpu",
                                         "--num_samples", 2], capfd)
    assert_one_line_error(result, "main_sample.py", f"{model / 'checkpoint-last.pth'}: tensor '{name}' holds "
                                                    f"non-finite values")
    files.assert_unchanged()


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (1, 3, 16, 16), (1, 1, 32, 32), (3, 32, 32)])
def test_teacher_forced_logits_refuses_images_of_another_size(sampler, shape):
    with pytest.raises(ValueError, match=r"images must be \(B, 3, 32, 32\) for this 32 px model, got"):
        sampler.model.teacher_forced_logits(torch.zeros(shape), torch.tensor([0]))
    assert sampler.model.teacher_forced_logits(torch.zeros(1, 3, 32, 32), torch.tensor([0])).shape[0] == 1


# ---- training images none of which decodes -------------------------------------------------------------
@pytest.fixture
def undecodable(tmp_path):
    """<root>/train/<class>/ for ten classes of files that are no images."""
    for c in range(10):
        folder = tmp_path / "data" / "train" / str(c)
        folder.mkdir(parents=True)
        for i in range(4):
            (folder / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot the rest of a PNG")
    return tmp_path / "data"


def test_a_folder_of_undecodable_images_is_refused_before_anything_is_written(undecodable, tiny_dir, tmp_path,
                                                                                capfd):
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS)
    files = Files(tmp_path)
    result = run_main(main.main, ["--config", config, "--data_path", undecodable, "--output_dir", tmp_path / "out"],
                      capfd)
    assert_one_line_error(result, "main.py", f"{undecodable / 'train'}: none of 16 images tried across its 40 can be "
                                             f"decoded", "cannot read the image")
    files.assert_unchanged()


def test_an_epoch_that_trained_on_nothing_fails_and_saves_nothing(undecodable, tiny_dir, tmp_path, monkeypatch):
    config = TrainConfig.load(tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS), data_path=str(undecodable),
                              output_dir=str(tmp_path / "out"))
    # a folder whose sampled images decode but none of the rest: past the up-front check
    monkeypatch.setattr(training_data.TenCropImageFolder, "check_decodable", lambda self: None)
    with pytest.raises(NoTrainingStepError, match=r"epoch 0 trained on nothing: every image failed to decode "
                                                  r"\(e\.g\. .*\.png\); no checkpoint was written"):
        train(replace(config, epochs=2))
    assert not list((tmp_path / "out").glob("checkpoint-*.pth"))
