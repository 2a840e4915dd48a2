"""The token cache: exact codes of all ten crops, resumable creation, refusal of a foreign cache."""
import json

import pytest
import torch

import training.token_cache as token_cache
from models.checkpoint import build_generator
from models.checkpoint_format import read_config
from train_support import digits_subset, tiny_config
from training.data import TenCropImageFolder
from training.token_cache import CacheSpec, TokenCacheDataset, cache_spec, create_token_cache


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_dir):
    path = tiny_config(tmp_path_factory.mktemp("config") / "tiny.yaml", tiny_dir)
    section, _ = read_config(path)
    return build_generator(section, path.parent)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = digits_subset(tmp_path_factory, per_class=1) / "train"
    (root / "7" / "zz_broken.png").write_bytes(b"not an image")
    return root


class Interrupted(Exception):
    pass


def test_cache_resumes_and_holds_the_exact_codes(model, images, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    encode = token_cache._encode_shard
    calls, interrupt = [], [True]

    def interrupted_after_one_shard(*args):
        calls.append(args[2])
        if interrupt[0] and len(calls) == 2:
            raise Interrupted
        return encode(*args)

    monkeypatch.setattr(token_cache, "_encode_shard", interrupted_after_one_shard)
    kwargs = dict(shard_size=4, batch_size=4, num_workers=0, device="cpu", progress=False)
    with pytest.raises(Interrupted):
        create_token_cache(model, images, cache, **kwargs)
    spec = cache_spec(model)
    with pytest.raises(ValueError, match="incomplete"):
        TokenCacheDataset(cache, spec)
    calls.clear()
    interrupt[0] = False
    create_token_cache(model, images, cache, **kwargs)
    assert calls == [1, 2]  # shard 0 was kept from the interrupted run

    metadata = json.loads((cache / "metadata.json").read_text())
    assert metadata["complete"] and metadata["num_images"] == 11 and metadata["num_cached"] == 10
    assert [p.endswith("zz_broken.png") for p in metadata["skipped"]] == [True]
    dataset = TokenCacheDataset(cache, spec, num_classes=10)
    assert len(dataset) == 10 and sorted(dataset.labels.tolist()) == list(range(10))

    folder = TenCropImageFolder(images, 32)
    for item, crop in ((0, 0), (9, 7)):
        codes, label = dataset[(item, crop)]
        image, expected_label = folder[(int(dataset.image_indices[item]), crop)]
        expected = model.autoenc.encode_pyramid(image[None], model.scale_sizes)
        assert label == expected_label
        for got, want in zip(codes, expected):
            assert got.dtype == torch.int16 and torch.equal(got.long(), want[0])


def test_a_cache_for_another_model_is_refused(model, images, tmp_path):
    cache = tmp_path / "cache"
    create_token_cache(model, images, cache, shard_size=64, batch_size=11, num_workers=0, device="cpu",
                       progress=False)
    spec = cache_spec(model)
    with pytest.raises(ValueError, match=r"made for scale_sizes \[1, 2, 4, 8\] \(this model: \[1, 8\]\)"):
        TokenCacheDataset(cache, CacheSpec(32, (1, 8), spec.autoencoder_sha256))
    with pytest.raises(ValueError, match="made for a different autoencoder"):
        TokenCacheDataset(cache, CacheSpec(32, spec.scale_sizes, "0" * 64))
    with pytest.raises(ValueError, match="has 10 classes but the config's model.num_classes is 5"):
        TokenCacheDataset(cache, spec, num_classes=5)
    with pytest.raises(ValueError, match="started with a different shard_size"):
        create_token_cache(model, images, cache, shard_size=3, batch_size=4, num_workers=0, device="cpu")
    with pytest.raises(FileNotFoundError, match="make it with --create_cache"):
        TokenCacheDataset(tmp_path / "none", spec)
