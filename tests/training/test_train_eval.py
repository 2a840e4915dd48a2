"""Inline evaluation plumbing: reproducible samples, the grid, and the torch-fidelity call."""
import numpy as np
import pytest
import torch
import torch_fidelity
from PIL import Image
from torch_fidelity.defaults import DEFAULTS

from models import load_model
from models.sampler import Sampler
from sampling import sample_io
from sampling.config import SampleConfig
from sampling.figures import image_grid
from sampling.plan import balanced_labels, draw, plan_for
from training.inline_eval import InlineEvaluator, NpzImages, SampleSettings, sample_images


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(tiny_dir)


def test_samples_do_not_depend_on_batching(tiny):
    settings = SampleSettings(cfg=1.5, cfg_start_step=2, seed=3, batch_size=4)
    whole = sample_images(tiny, list(range(6)), settings, "cpu")
    split = sample_images(tiny, [4, 5], SampleSettings(cfg=1.5, cfg_start_step=2, seed=3, batch_size=1), "cpu")
    assert whole.dtype == np.uint8 and whole.shape == (6, 32, 32, 3)
    # Equal up to float reductions that depend on the batch size with several threads.
    assert np.abs(whole[4:].astype(float) - split).mean() < 0.5
    assert np.abs(whole[:2].astype(float) - split).mean() > 10  # other indices, other samples


def test_samples_are_main_sample_s_samples(tiny):
    """One seed scheme: inline sample i is main_sample.py's sample i (seed * 1000003 + i, class i % classes)."""
    settings = SampleSettings(cfg=1.5, cfg_start_step=2, steps_per_scale=4, temperature=1.0, seed=3, batch_size=4)
    ours = sample_images(tiny, list(range(4)), settings, "cpu")
    config = SampleConfig(cfg=1.5, cfg_start_step=2, steps_per_scale=4, seed=3, fid=True, num_samples=10)
    out = draw(Sampler(tiny), plan_for(config, tiny), list(range(4)), "cpu")
    assert out.labels.tolist() == balanced_labels(range(4), tiny.config.num_classes).tolist()
    assert np.array_equal(ours, sample_io.to_uint8(out.images))


def test_grid_is_the_image_grid_of_the_first_samples(tiny, tmp_path):
    settings = SampleSettings(cfg=1.5, cfg_start_step=2, seed=1, batch_size=3)
    evaluator = InlineEvaluator(tmp_path, settings, num_samples=0, grid_samples=5)
    metrics, grid = evaluator(tiny, epoch=2, device=torch.device("cpu"))
    expected = image_grid(sample_images(tiny, list(range(5)), settings, "cpu"))
    assert metrics == {} and grid.shape == (3, *expected.shape[:2])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "samples" / "epoch-2.png")), expected)
    assert np.array_equal((grid * 255).round().byte().permute(1, 2, 0).numpy(), expected)


def test_fidelity_gets_all_samples_and_known_options(tiny, tmp_path, monkeypatch):
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"local weights stand-in")
    reference = tmp_path / "reference"
    (reference / "nested").mkdir(parents=True)
    ref_images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    for i, image in enumerate(ref_images):  # any depth, any case of extension
        Image.fromarray(image).save(reference / ["a.png", "nested/b.PNG", "c.jpg"][i], quality=100)
    seen = {}

    def fake_calculate_metrics(**kwargs):
        unknown = set(kwargs) - set(DEFAULTS)
        assert not unknown, unknown
        seen.update(kwargs)
        seen["samples"] = np.stack([kwargs["input1"][i].numpy() for i in range(len(kwargs["input1"]))])
        return {"frechet_inception_distance": 12.5, "inception_score_mean": 3.0}

    monkeypatch.setattr(torch_fidelity, "calculate_metrics", fake_calculate_metrics)
    settings = SampleSettings(cfg=1.5, cfg_start_step=2, seed=1, batch_size=3)
    evaluator = InlineEvaluator(tmp_path / "out", settings, num_samples=5, grid_samples=0, reference=reference,
                                inception_weights=weights)
    (tmp_path / "out").mkdir()
    metrics, grid = evaluator(tiny, epoch=4, device=torch.device("cpu"))
    assert metrics == {"fid": 12.5, "inception_score": 3.0} and grid is None
    reference_images = [seen["input2"][i] for i in range(len(seen["input2"]))]
    assert [r.shape for r in reference_images] == [(3, 8, 8)] * 3 and reference_images[0].dtype == torch.uint8
    assert np.array_equal(reference_images[0].permute(1, 2, 0).numpy(), ref_images[0])
    assert np.array_equal(reference_images[2].permute(1, 2, 0).numpy(), ref_images[1])  # nested/ after c.jpg
    assert seen["feature_extractor_weights_path"] == str(weights)
    assert seen["fid"] and seen["isc"] and not seen["cuda"]
    samples = sample_images(tiny, list(range(5)), settings, "cpu")
    assert np.array_equal(seen["samples"], samples.transpose(0, 3, 1, 2))
    assert not list((tmp_path / "out").iterdir())  # the temporary sample files are gone


def test_missing_reference_or_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="eval_reference_data_path not found"):
        InlineEvaluator(tmp_path, SampleSettings(), 4, 0, reference=tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="eval_inception_weights not found"):
        InlineEvaluator(tmp_path, SampleSettings(), 4, 0, inception_weights=tmp_path / "none.pth")


def test_npz_reference_reads_arr_0_lazily(tmp_path):
    images = torch.randint(0, 256, (3, 4, 4, 3), dtype=torch.uint8).numpy()
    np.savez(tmp_path / "ref.npz", images)
    reference = NpzImages(tmp_path / "ref.npz")
    assert len(reference) == 3 and reference.images is None
    assert np.array_equal(reference[2].permute(1, 2, 0).numpy(), images[2])
    np.savez(tmp_path / "other.npz", pictures=images)
    with pytest.raises(ValueError, match="other.npz: not an .npz with an arr_0 array"):
        InlineEvaluator(tmp_path, SampleSettings(), 4, 0, reference=tmp_path / "other.npz")


def test_several_guidance_values_kept_samples_and_samples_only(tiny, tmp_path, monkeypatch):
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"local weights stand-in")
    reference = tmp_path / "reference"
    reference.mkdir()
    Image.new("RGB", (32, 32)).save(reference / "0.png")
    results = iter([{"frechet_inception_distance": 10.0, "inception_score_mean": 2.0},
                    {"frechet_inception_distance": 20.0, "inception_score_mean": 4.0}])
    monkeypatch.setattr(torch_fidelity, "calculate_metrics", lambda **kwargs: next(results))
    settings = SampleSettings(cfg=1.5, cfg_start_step=2, seed=1, batch_size=3)
    kept = tmp_path / "kept"
    evaluator = InlineEvaluator(tmp_path / "out", settings, num_samples=3, grid_samples=0, reference=reference,
                                inception_weights=weights, guidance=(1.5, 0.0), samples_dir=kept, keep_samples=True)
    metrics, _ = evaluator(tiny, epoch=7, device=torch.device("cpu"))
    assert metrics == {"fid_cfg1.5": 10.0, "inception_score_cfg1.5": 2.0, "fid_cfg0": 20.0, "inception_score_cfg0": 4.0}
    guided = np.load(kept / "samples_ep007_cfg1.50" / "rank0.npy")
    plain = np.load(kept / "samples_ep007_cfg0.00" / "rank0.npy")
    assert guided.shape == (3, 32, 32, 3) and not np.array_equal(guided, plain)
    only = InlineEvaluator(tmp_path / "out", settings, num_samples=3, grid_samples=0, reference=reference,
                           inception_weights=weights, samples_dir=tmp_path / "only", samples_only=True)
    assert only(tiny, epoch=1, device=torch.device("cpu"))[0] == {}  # calculate_metrics is not called again
    assert not list((tmp_path / "only").iterdir())  # drawn, then removed: keep_samples is 0


def test_removing_the_evaluation_samples_leaves_the_user_s_files(tiny, tmp_path, monkeypatch):
    """Without keep_samples only the rank files the evaluation wrote go, never the folder around them."""
    settings = SampleSettings(cfg=1.5, cfg_start_step=2, seed=1, batch_size=3)
    folder = tmp_path / "kept" / "samples_ep002_cfg1.50"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("the user's")
    evaluator = InlineEvaluator(tmp_path / "out", settings, num_samples=3, grid_samples=0,
                                samples_dir=tmp_path / "kept", samples_only=True)
    evaluator(tiny, epoch=2, device=torch.device("cpu"))
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    evaluator(tiny, epoch=3, device=torch.device("cpu"))
    assert not (tmp_path / "kept" / "samples_ep003_cfg1.50").exists()  # its own folder goes too
