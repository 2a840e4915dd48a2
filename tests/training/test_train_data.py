"""Training data: ADM crop + ten crops, reproducible sampling, undecodable images, EMA."""
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import BatchSampler, DataLoader

from train_support import digits_subset
from training.data import (CROP_MARGIN, CropSampler, TenCropImageFolder, center_crop_arr, collate_skipping,
                       image_folder_samples, ten_crops, to_model_range)
from training.ema import EMA


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_subset(tmp_path_factory, per_class=2)


def test_ten_crops_match_torchvision_on_the_adm_crop():
    rng = torch.Generator().manual_seed(0)
    img = Image.fromarray(torch.randint(0, 256, (50, 70, 3), generator=rng, dtype=torch.uint8).numpy())
    ours = ten_crops(img, 32)
    theirs = TF.ten_crop(center_crop_arr(img, int(32 * CROP_MARGIN)), 32)
    assert len(ours) == 10
    for a, b in zip(ours, theirs):
        assert torch.equal(TF.pil_to_tensor(a), TF.pil_to_tensor(b))
    x = to_model_range(ours[0])
    assert x.shape == (3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x, TF.normalize(TF.to_tensor(ours[0]), [0.5] * 3, [0.5] * 3), atol=1e-6)


def test_sampler_is_a_function_of_seed_and_epoch():
    def items(epoch, rank=0, world=1, seed=0):
        sampler = CropSampler(10, 10, seed, rank, world)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert items(3) == items(3) and items(3) != items(4) and items(3) != items(3, seed=1)
    assert sorted(i for i, _ in items(0)) == list(range(10))
    halves = items(5, 0, 2) + items(5, 1, 2)
    assert sorted(halves) == sorted(items(5))  # two processes split the same items, same crops
    uneven = [items(0, r, 3) for r in range(3)]
    assert [len(u) for u in uneven] == [4, 4, 4]  # padded to equal length by wrapping around


def test_class_count_and_missing_folder_are_named(digits, tmp_path):
    with pytest.raises(ValueError, match="has 10 class folders but the config's model.num_classes is 1000"):
        image_folder_samples(digits / "train", 1000)
    with pytest.raises(FileNotFoundError, match="training images not found"):
        image_folder_samples(tmp_path / "none" / "train")


def test_undecodable_images_are_skipped_and_counted(digits, tmp_path):
    root = tmp_path / "train"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for k, png in enumerate(sorted((digits / "train" / "3").glob("*.png"))):
            (root / label / f"{k}.png").write_bytes(png.read_bytes())
    (root / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    dataset = TenCropImageFolder(root, 32, num_classes=2)
    assert len(dataset) == 5
    loader = DataLoader(dataset, batch_sampler=BatchSampler(CropSampler(5, 10, 0, shuffle=False), 5, False),
                        collate_fn=collate_skipping)
    (batch,) = list(loader)
    assert batch.inputs.shape == (4, 3, 32, 32) and batch.labels.tolist() == [0, 0, 1, 1]
    assert [p.endswith("broken.png") for p in batch.skipped] == [True]


def test_ema_shadows_trainable_weights_only():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    model[0].requires_grad_(False)  # stands for the frozen autoencoder
    ema = EMA(model, rate=0.75)
    assert len(ema.shadow) == 2
    start = model[1].weight.detach().clone()
    with torch.no_grad():
        model[1].weight.add_(4.0)
    ema.update()
    assert torch.allclose(ema.shadow[0], start + 1.0)
    state = ema.state_dict(model)
    assert set(state) == set(model.state_dict()) and torch.equal(state["0.weight"], model[0].weight)
    with ema.applied():
        assert torch.allclose(model[1].weight, start + 1.0)
    assert torch.allclose(model[1].weight, start + 4.0)
