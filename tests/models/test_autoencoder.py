import json

import pytest
import torch

from models.autoencoder import (AutoencoderConfig, VQModel, autoencoder_state_dict_from_file, load_autoencoder,
                                load_llamagen_weights)
from models.checkpoint_format import load_state_dict_strict

ATOL = 1e-4


def _fixture_autoencoder(folder):
    # The expected numbers come from the autoencoder stored inside the generator checkpoint
    # (`autoenc.*` of checkpoint-last.pth['model']); autoenc/checkpoint.pth holds different
    # weights of the same shapes.
    model = VQModel(AutoencoderConfig.from_yaml(folder / "autoenc" / "autoencoder_config.yaml"))
    state_dict = autoencoder_state_dict_from_file(folder / "checkpoint-last.pth", prefix="autoenc.")
    load_state_dict_strict(model, state_dict, "checkpoint-last.pth")
    return model.eval()


@pytest.fixture(scope="module")
def tiny_ae(tiny_dir):
    return _fixture_autoencoder(tiny_dir)


@pytest.fixture(scope="module")
def pyramid(tiny_ae, tiny_expected):
    with torch.no_grad():
        return tiny_ae.quantize_pyramid(tiny_expected["imgs"], [1, 2, 4, 8])


@pytest.fixture(scope="module")
def parity(parity_dir):
    """(autoencoder, expected tensors, scale sizes) of each parity fixture."""
    scales = json.loads((parity_dir / "expected.json").read_text())["scale_sizes"]
    return _fixture_autoencoder(parity_dir), torch.load(parity_dir / "expected.pt", weights_only=True), scales


def test_the_fixtures_autoencoder_config_reads_as_written(tiny_dir):
    config = AutoencoderConfig.from_yaml(tiny_dir / "autoenc" / "autoencoder_config.yaml")
    assert (config.ch, config.ch_mult, config.num_res_blocks, config.z_channels) == (32, (1, 2, 2), 1, 32)
    assert (config.embed_dim, config.n_embed, config.normalize, config.resolution) == (8, 64, True, 32)
    assert VQModel(config).stride == 4


def test_a_missing_or_malformed_autoencoder_config_is_refused_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        AutoencoderConfig.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  target: x.Y\n  params:\n    embed_dim: 8\n    ddconfig:\n      chh: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*chh"):
        AutoencoderConfig.from_yaml(bad)
    bad.write_text("model:\n  params:\n    codebook_size: 8\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*codebook_size"):
        AutoencoderConfig.from_yaml(bad)


def test_encode_matches_the_published_code(parity):
    ae, expected, _ = parity
    with torch.no_grad():
        z = ae.encode(expected["imgs"])
    torch.testing.assert_close(z, expected["ae_encode_full"], atol=ATOL, rtol=0)


def test_quantize_pyramid_matches_the_published_code(parity):
    ae, expected, scales = parity
    with torch.no_grad():
        zqs, inds = ae.quantize_pyramid(expected["imgs"], scales)
    for i, s in enumerate(scales):
        assert inds[i].dtype == torch.int64 and inds[i].shape == (3, s, s)
        assert torch.equal(inds[i], expected[f"ae_q_inds_{i}"]), f"scale {s}"
        torch.testing.assert_close(zqs[i], expected[f"ae_zq_{i}"], atol=ATOL, rtol=0)


def test_lookup_and_encode_pyramid_give_the_pyramids_codes(tiny_ae, pyramid, tiny_expected):
    zqs, inds = pyramid
    torch.testing.assert_close(tiny_ae.lookup(inds[2]), zqs[2], atol=0, rtol=0)
    with pytest.raises(ValueError, match="scale_sizes"):
        tiny_ae.encode_pyramid(tiny_expected["imgs"])
    tiny_ae.scale_sizes = [2, 8]
    try:
        with torch.no_grad():
            got = tiny_ae.encode_pyramid(tiny_expected["imgs"])
    finally:
        tiny_ae.scale_sizes = None
    assert torch.equal(got[0], inds[1]) and torch.equal(got[1], inds[3])


def test_decode_matches_the_published_code(parity):
    ae, expected, scales = parity
    with torch.no_grad():
        img = ae.decode(expected[f"ae_zq_{len(scales) - 1}"])
    torch.testing.assert_close(img, expected["ae_decode_last"], atol=ATOL, rtol=0)


def test_rescale_latents_matches_the_published_code(parity):
    ae, expected, scales = parity
    for s in scales:
        z = ae.rescale_latents(expected[f"ae_zq_{len(scales) - 1}"], s)
        torch.testing.assert_close(z, expected[f"ae_rescale_latents_to_{s}"], atol=ATOL, rtol=0)


def test_a_standalone_autoencoder_checkpoint_loads_for_evaluation(tiny_dir):
    model = load_autoencoder(tiny_dir / "autoenc" / "autoencoder_config.yaml",
                             tiny_dir / "autoenc" / "checkpoint.pth")
    assert not model.training and bool(model.quantize.initialized)
    assert model.codebook().shape == (64, 8)
    torch.testing.assert_close(model.codebook().norm(dim=1), torch.ones(64))


@pytest.mark.parametrize("layout", ["state_dict", "model", "bare"])
def test_every_autoencoder_state_dict_layout_loads(tmp_path, tiny_ae, layout):
    sd = tiny_ae.state_dict()
    torch.save(sd if layout == "bare" else {layout: sd}, tmp_path / "ae.pth")
    got = autoencoder_state_dict_from_file(tmp_path / "ae.pth")
    assert got.keys() == sd.keys()


@pytest.mark.parametrize("change, key", [
    ("missing", "decoder.conv_out.bias"),
    ("unexpected", "encoder.extra.weight"),
    ("shape", "quant_conv.weight"),
])
def test_the_strict_loader_names_a_missing_unexpected_or_misshapen_key(tmp_path, tiny_dir, tiny_ae, change, key):
    sd = dict(tiny_ae.state_dict())
    if change == "missing":
        del sd[key]
    elif change == "unexpected":
        sd[key] = torch.zeros(1)
    else:
        sd[key] = torch.zeros(8, 16, 1, 1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(ValueError) as err:
        load_autoencoder(tiny_dir / "autoenc" / "autoencoder_config.yaml", path)
    message = str(err.value)
    assert key in message and "broken.pth" in message and "\n" not in message


def test_llamagen_weights_load_with_or_without_their_codebook_and_name_a_missing_key(tmp_path, tiny_ae):
    own = tiny_ae.state_dict()
    sd = {k: v.clone() for k, v in own.items()
          if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}
    sd["quantize.embedding.weight"] = torch.randn(64, 8)
    sd["quantize.codebook_used"] = torch.zeros(65536)
    torch.save({"model": sd}, tmp_path / "vq_ds16_c2i.pt")

    model = VQModel(tiny_ae.config)
    old_codebook = model.codebook().detach().clone()
    load_llamagen_weights(model, tmp_path / "vq_ds16_c2i.pt")
    assert torch.equal(model.encoder.conv_in.weight, own["encoder.conv_in.weight"])
    assert torch.equal(model.post_quant_conv.bias, own["post_quant_conv.bias"])
    assert torch.equal(model.codebook(), old_codebook)

    load_llamagen_weights(model, tmp_path / "vq_ds16_c2i.pt", load_codebook=True)
    torch.testing.assert_close(model.codebook(),
                               torch.nn.functional.normalize(sd["quantize.embedding.weight"], dim=1))

    del sd["decoder.mid.1.q.weight"]
    torch.save({"model": sd}, tmp_path / "vq_ds16_c2i.pt")
    with pytest.raises(ValueError, match=r"decoder\.mid\.1\.q\.weight"):
        load_llamagen_weights(model, tmp_path / "vq_ds16_c2i.pt")


def test_l_size_keys_match_the_published_checkpoint(published_keys_dir):
    expected = {}
    for line in (published_keys_dir / "official_state_dict_L-2x.txt").read_text().splitlines():
        if line.startswith("autoenc."):
            key, shape, dtype = line.split("\t")
            expected[key[len("autoenc."):]] = (json.loads(shape), dtype)
    with torch.device("meta"):
        model = VQModel(AutoencoderConfig())
    got = {k: (list(v.shape), str(v.dtype).removeprefix("torch."))
           for k, v in model.state_dict().items()}
    assert got == expected
    assert model.stride == 16
