"""Training data besides an ImageFolder: torchvision's CelebA and Food101 layouts (small fakes), and
which one a data folder is."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision import datasets

from train_support import FAST_ARGS, TINY_CPU_CONFIG
from training.config import TrainConfig
from training.data import NO_LABEL, TenCropImageFolder, dataset_for_path, image_root, dataset_samples
from training.engine import batch_tokens, setup, train
from training.metrics_log import read_metrics

CELEBA_SPLITS = [0, 0, 1, 0, 2, 0, 0, 1, 0, 0, 0, 2, 0]  # list_eval_partition.txt: 0 train, 1 valid, 2 test
FOOD_CLASSES = {"ramen": 3, "apple_pie": 2, "bibimbap": 3}  # deliberately not in sorted order


def _image(path, seed, size=(40, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    """<root>/celeba as torchvision.datasets.CelebA(root) reads it: images and the five annotation files."""
    folder = tmp_path_factory.mktemp("faces") / "celeba"
    names = [f"{i + 1:06d}.jpg" for i in range(len(CELEBA_SPLITS))]
    for i, name in enumerate(names):
        _image(folder / "img_align_celeba" / name, i)
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(names, CELEBA_SPLITS)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{n} {i % 3 + 1}\n" for i, n in enumerate(names)))
    attributes = ["Smiling", "Young"]
    (folder / "list_attr_celeba.txt").write_text(f"{len(names)}\n{' '.join(attributes)}\n"
                                                 + "".join(f"{n} 1 -1\n" for n in names))
    (folder / "list_bbox_celeba.txt").write_text("{}\nimage_id x_1 y_1 width height\n".format(len(names))
                                                 + "".join(f"{n} 1 2 30 40\n" for n in names))
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{len(names)}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
        f"rightmouth_x rightmouth_y\n" + "".join(f"{n} 1 2 3 4 5 6 7 8 9 10\n" for n in names))
    return folder


@pytest.fixture(scope="module")
def food101(tmp_path_factory):
    """<root> as torchvision.datasets.Food101(root) reads it: <root>/food-101/{meta,images}."""
    root = tmp_path_factory.mktemp("food101") / "food101"
    base = root / "food-101"
    split, seed = {}, 0
    for name, count in FOOD_CLASSES.items():
        split[name] = [f"{name}/{100 + k}" for k in range(count)]
        for image in split[name]:
            _image(base / "images" / f"{image}.jpg", seed)
            seed += 1
    (base / "meta").mkdir(parents=True)
    (base / "meta" / "train.json").write_text(json.dumps(split))
    (base / "meta" / "test.json").write_text(json.dumps({name: [] for name in FOOD_CLASSES}))
    (base / "meta" / "classes.txt").write_text("\n".join(sorted(FOOD_CLASSES)) + "\n")
    return root


def test_the_published_naming_rule(tmp_path):
    assert dataset_for_path(tmp_path / "celeba") == "celeba"
    assert dataset_for_path(tmp_path / "food101") == "food101"
    assert dataset_for_path(tmp_path / "imagenet") == "imagefolder"
    assert dataset_for_path(str(tmp_path / "celeba") + "/") == "celeba"
    assert TrainConfig(data_path=str(tmp_path / "celeba")).resolved_dataset() == "celeba"
    assert TrainConfig(data_path=str(tmp_path / "celeba"), dataset="imagefolder").resolved_dataset() == "imagefolder"
    assert TrainConfig(data_path=str(tmp_path / "faces"), dataset="celeba").resolved_dataset() == "celeba"
    assert image_root(tmp_path / "imagenet", "imagefolder") == tmp_path / "imagenet" / "train"
    assert image_root(tmp_path / "celeba", "celeba") == tmp_path / "celeba"


def test_celeba_lists_what_torchvision_lists_without_labels(celeba, monkeypatch):
    # The fake's annotation files cannot have the real ones' MD5 sums, which torchvision checks.
    monkeypatch.setattr(datasets.CelebA, "_check_integrity", lambda self: True)
    reference = datasets.CelebA(str(celeba.parent), split="train")
    classes, samples = dataset_samples(celeba, "celeba")
    assert classes is None and [p.split("/")[-1] for p, _ in samples] == reference.filename
    assert len(samples) == CELEBA_SPLITS.count(0) and {label for _, label in samples} == {NO_LABEL}
    with pytest.raises(ValueError, match="CelebA has no class labels, but the config's model.class_cond is true"):
        dataset_samples(celeba, "celeba", num_classes=10)


def test_food101_lists_what_torchvision_lists(food101):
    reference = datasets.Food101(str(food101), split="train")
    classes, samples = dataset_samples(food101, "food101")
    assert classes == reference.classes == sorted(FOOD_CLASSES)
    assert [p for p, _ in samples] == [str(p) for p in reference._image_files]
    assert [label for _, label in samples] == reference._labels
    with pytest.raises(ValueError, match="has 3 classes but the config's model.num_classes is 10"):
        dataset_samples(food101, "food101", num_classes=10)


def _config(tmp_path, tiny_dir, data_path, **model):
    data = yaml.safe_load(TINY_CPU_CONFIG.read_text())
    data["model"]["autoenc"].update(config_path=str(tiny_dir / "autoenc" / "autoencoder_config.yaml"),
                                    checkpoint_path=str(tiny_dir / "autoenc" / "checkpoint.pth"))
    data["model"].update(model)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return TrainConfig.load(path, data_path=str(data_path), output_dir=str(tmp_path / "out"),
                            **{**FAST_ARGS, "batch_size": 4})


@pytest.mark.parametrize("cached", [False, True])
def test_unconditional_training_on_celeba(celeba, tiny_dir, tmp_path, cached):
    config = _config(tmp_path, tiny_dir, celeba, class_cond=False, num_classes=0)
    assert config.dataset is None  # the folder's name selects CelebA
    if cached:  # the token cache of CelebA's images, made first, then trained from
        config = replace(config, create_cache=True, use_cache=True, cache_path=str(tmp_path / "cache"))
    out = train(config)
    steps = [m for m in read_metrics(out) if "iteration" in m]
    assert len(steps) == CELEBA_SPLITS.count(0) // 4 and all(np.isfinite(m["loss_total"]) for m in steps)
    if cached:  # the training partition only, without classes
        metadata = json.loads((tmp_path / "cache" / "metadata.json").read_text())
        assert (metadata["num_images"], metadata["classes"]) == (CELEBA_SPLITS.count(0), None)


def test_create_cache_alone_makes_the_cache_and_trains_nothing(celeba, tiny_dir, tmp_path):
    """--create_cache without --use_cache stops after the cache, in train() as in main.py (its help)."""
    config = _config(tmp_path, tiny_dir, celeba, class_cond=False, num_classes=0)
    assert train(replace(config, create_cache=True, cache_path=str(tmp_path / "cache"))) is None
    assert (tmp_path / "cache" / "metadata.json").is_file() and not (tmp_path / "out").exists()


def test_food101_batches_carry_its_labels(food101, tiny_dir, tmp_path):
    run = setup(_config(tmp_path, tiny_dir, food101, num_classes=3))
    assert isinstance(run.loader.dataset, TenCropImageFolder) and run.loader.dataset.classes == sorted(FOOD_CLASSES)
    batch = next(iter(run.loader))
    codes, labels = batch_tokens(batch, run.model, run.device)
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1, 2} and codes[-1].shape == (4, 8, 8)
    run.close()
