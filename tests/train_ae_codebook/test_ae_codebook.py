"""Codebook requantization (train_ae_codebook/): LlamaGen layout in, published layout out."""
import json
import re
import shutil

import pytest
import torch
import torch.nn.functional as F
import yaml

from models.autoencoder import (LLAMAGEN_MODULES, AutoencoderConfig, VQModel, autoencoder_state_dict_from_file,
                                load_autoencoder)
from models.checkpoint import build_generator
from models.checkpoint_format import LAST
from train_ae_codebook import main_train_ae, training
from train_ae_codebook.codebook import (LatentStatistics, allocate_codes, initial_codebook, perplexity,
                                        reinit_dead_codes)
from train_ae_codebook.images import StepBatches
from train_ae_codebook.train_config import AETrainConfig, make_config
from train_ae_codebook.training import build_autoencoder, codebook_weight, train_autoencoder
from common.digits import write_digits_imagefolder
from common.lr_schedule import cosine_decay

LLAMAGEN_CODEBOOK = (16384, 8)  # vq_ds16_c2i.pt: 16384 codes of 8 dims, plus a usage buffer
LLAMAGEN_USAGE = 65536
# VQ-16 key names (5 levels, 2 res blocks) with narrow channels: the real layout, small weights.
SMALL_VQ16 = {"ch": 32, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "z_channels": 32}
IMG_SIZE = 64  # stride 16: latents 1..4


def official_autoencoder_keys(published_keys_dir) -> dict:
    """Key -> shape of the published autoencoder (its encoder/decoder are LlamaGen's VQ-16)."""
    shapes = {}
    for line in (published_keys_dir / "official_state_dict_L-2x.txt").read_text().splitlines():
        if line.startswith("autoenc."):
            key, shape, _ = line.split("\t")
            shapes[key.removeprefix("autoenc.")] = json.loads(shape)
    return shapes


def llamagen_state_dict(model_state: dict) -> dict:
    """LlamaGen's checkpoint content: our conv/encoder/decoder names, its own codebook keys."""
    state = {k: v for k, v in model_state.items() if k.startswith(LLAMAGEN_MODULES)}
    state["quantize.embedding.weight"] = torch.randn(LLAMAGEN_CODEBOOK)
    state["quantize.codebook_used"] = torch.zeros(LLAMAGEN_USAGE)
    return state


@pytest.fixture(scope="module")
def few_images(tmp_path_factory):
    """Two real digits per class (20 images)."""
    digits = write_digits_imagefolder(tmp_path_factory.mktemp("digits"), size=32)
    few = tmp_path_factory.mktemp("few")
    for folder in sorted((digits / "train").iterdir()):
        for png in sorted(folder.glob("*.png"))[:2]:
            shutil.copy(png, few / f"{folder.name}_{png.name}")
    return few


@pytest.fixture(scope="module")
def small_vq16(tmp_path_factory, published_keys_dir):
    """(autoencoder_config.yaml, LlamaGen-layout checkpoint with random weights)."""
    folder = tmp_path_factory.mktemp("llamagen")
    config = folder / "autoencoder_config.yaml"
    config.write_text(yaml.safe_dump({"model": {"target": "cbgen.autoencoder.VQModel", "params": {
        "ddconfig": SMALL_VQ16, "embed_dim": 8, "n_embed": 32, "normalize": True,
        "requant_pyramid_levels": -1, "resolution": IMG_SIZE}}}))
    torch.manual_seed(0)
    state = llamagen_state_dict(VQModel(AutoencoderConfig.from_yaml(config)).state_dict())
    assert set(state) - {"quantize.embedding.weight", "quantize.codebook_used"} == {
        k for k in official_autoencoder_keys(published_keys_dir) if k.startswith(LLAMAGEN_MODULES)}
    checkpoint = folder / "vq_ds16_c2i.pt"
    torch.save({"model": state}, checkpoint)
    return config, checkpoint


def requant_config(small_vq16, data, output_dir, **changes) -> AETrainConfig:
    config, checkpoint = small_vq16
    settings = dict(config_path=str(config), data_path=str(data), output_dir=str(output_dir), device="cpu",
                    init_checkpoint=str(checkpoint), img_size=IMG_SIZE, batch_size=4, epochs=2,
                    init_steps=3, dead_code_interval=3, lr=1e-2, log_every=1, save_every=3,
                    num_workers=0, tensorboard=False)
    settings.update(changes)
    return AETrainConfig(**settings)


@pytest.fixture(scope="module")
def requant_run(small_vq16, few_images, tmp_path_factory):
    """A 10-step requantization; records the initial codebook and checkpoint-last at step 6."""
    out, saved = tmp_path_factory.mktemp("requant"), tmp_path_factory.mktemp("step6")
    init_codebooks = []
    real_init, real_save = training.initial_codebook, training.AutoencoderRun.save_state

    def record_init(*args):
        init_codebooks.append(real_init(*args))
        return init_codebooks[-1]

    def save_and_copy(run, step):
        real_save(run, step)
        if step == 6:
            shutil.copy(run.output_dir / LAST, saved / LAST)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "initial_codebook", record_init)
        mp.setattr(training.AutoencoderRun, "save_state", save_and_copy)
        config = requant_config(small_vq16, few_images, out, tensorboard=True)
        assert train_autoencoder(config) == out
    return config, out, init_codebooks, saved / LAST


def test_requantize_changes_only_the_codebook(requant_run, small_vq16):
    config, out, init_codebooks, _ = requant_run
    _, llamagen = small_vq16
    source = autoencoder_state_dict_from_file(llamagen)
    result = torch.load(out / "checkpoint.pth", weights_only=True)
    state = result["state_dict"]
    model = load_autoencoder(out / "autoencoder_config.yaml", out / "checkpoint.pth")
    assert list(result) == ["state_dict"] and list(state) == list(model.state_dict())
    assert {"quantize.embedding.parametrizations.weight.original", "quantize.initialized",
            "cluster_usage_train"} <= set(state)

    frozen = [k for k in state if k.startswith(LLAMAGEN_MODULES)]
    assert len(frozen) == len(state) - 3
    for key in frozen:
        assert torch.equal(state[key], source[key]), key

    codebook = model.codebook().detach()
    assert codebook.shape == (32, 8) and bool(model.quantize.initialized)
    torch.testing.assert_close(codebook.norm(dim=1), torch.ones(32))
    assert len(init_codebooks) == 1
    moved = (codebook - F.normalize(init_codebooks[0], dim=1)).norm(dim=1)
    assert (moved > 1e-3).float().mean() > 0.5  # training moved most codes
    usage = model.cluster_usage_train
    assert usage.sum() > 0 and torch.equal(usage, usage.round())


def test_requantize_logs_usage_and_perplexity(requant_run):
    config, out, _, _ = requant_run
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 11))
    quantized = [r for r in records if r["step"] > config.init_steps]
    for r in quantized:
        assert 0 < r["codebook_usage"] <= 1 and 1 <= r["perplexity"] <= 32
    assert "codebook_usage" not in records[0]
    assert [r["step"] for r in records if "dead_codes_reinitialised" in r] == [6, 9]
    # main.py's cosine (common/lr_schedule.py) over the steps after the codebook initialisation
    total, init = 10, config.init_steps
    assert [r["lr"] for r in records] == [cosine_decay(config.lr, (r["step"] - 1 - init) / (total - init))
                                          for r in records]
    assert records[init]["lr"] == config.lr and records[-1]["lr"] < config.lr / 10
    assert list(out.glob("events.out.tfevents.*"))
    written = yaml.safe_load((out / "autoencoder_config.yaml").read_text())
    assert written["model"]["params"]["ddconfig"] == SMALL_VQ16 and written["training_args"]["init_steps"] == 3
    assert "args" not in written


def test_requantized_autoencoder_loads_into_generator(requant_run, few_images):
    _, out, _, _ = requant_run
    section = {"img_size": IMG_SIZE, "class_cond": True, "num_classes": 10,
               "llama_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                                "num_hidden_layers": 1},
               "autoenc": {"config_path": "autoencoder_config.yaml", "checkpoint_path": "checkpoint.pth"}}
    generator = build_generator(section, out)
    ours = load_autoencoder(out / "autoencoder_config.yaml", out / "checkpoint.pth")
    assert generator.scale_sizes == [1, 2, 4]
    assert torch.equal(generator.autoencoder.codebook(), ours.codebook())
    imgs = torch.rand(2, 3, IMG_SIZE, IMG_SIZE) * 2 - 1
    with torch.no_grad():
        loss, _ = generator.eval().loss(generator.autoencoder.encode_pyramid(imgs), torch.tensor([1, 2]))
    assert torch.isfinite(loss)


def test_resume_repeats_the_uninterrupted_run(requant_run, small_vq16, few_images, tmp_path):
    config, out, _, step6 = requant_run
    shutil.copy(step6, tmp_path / LAST)
    assert torch.load(step6, weights_only=True)["step"] == 6
    train_autoencoder(requant_config(small_vq16, few_images, tmp_path))
    resumed = torch.load(tmp_path / "checkpoint.pth", weights_only=True)["state_dict"]
    straight = torch.load(out / "checkpoint.pth", weights_only=True)["state_dict"]
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key

    shutil.copy(step6, tmp_path / LAST)
    with pytest.raises(ValueError, match=r"n_embed=32, this one n_embed=16"):
        train_autoencoder(requant_config(small_vq16, few_images, tmp_path, n_embed=16))


def test_full_size_llamagen_layout_is_accepted(published_keys_dir, tmp_path, few_images):
    """The real VQ-16 shapes from the published key list, stored as zero-stride views (a few
    KB on disk), load into the full-size model built on the meta device."""
    shapes = official_autoencoder_keys(published_keys_dir)
    state = {k: torch.zeros(1).expand(shape) for k, shape in shapes.items() if k.startswith(LLAMAGEN_MODULES)}
    state["quantize.embedding.weight"] = torch.zeros(1).expand(LLAMAGEN_CODEBOOK)
    state["quantize.codebook_used"] = torch.zeros(LLAMAGEN_USAGE)
    torch.save({"model": state}, tmp_path / "vq_ds16_c2i.pt")
    config = AETrainConfig(config_path="train_ae_codebook/autoencoder_config.yaml", data_path=str(few_images),
                           output_dir=str(tmp_path / "out"), init_checkpoint=str(tmp_path / "vq_ds16_c2i.pt"))
    ae_config = training.autoencoder_config(config)
    with torch.device("meta"):
        model = build_autoencoder(config, ae_config)
    assert model.stride == 16 and model.codebook().shape == (4096, 8)
    assert [p for p in model.parameters() if p.requires_grad] == [codebook_weight(model)]


def test_other_layouts_name_the_mismatched_keys(small_vq16, few_images, tiny_dir, tmp_path, capsys):
    config, _ = small_vq16
    generator_checkpoint = tiny_dir / "checkpoint-last.pth"  # keys under `autoenc.`
    with pytest.raises(ValueError, match=r"checkpoint-last\.pth.*missing \d+: decoder\.conv_blocks\.0"):
        train_autoencoder(requant_config(small_vq16, few_images, tmp_path, init_checkpoint=str(generator_checkpoint)))

    other = tiny_dir / "autoenc" / "checkpoint.pth"  # 3 levels, 1 res block: another architecture
    with pytest.raises(SystemExit) as exit_info:
        main_train_ae.main(["--config", str(config), "--data_path", str(few_images), "--output_dir",
                            str(tmp_path / "out"), "--init_checkpoint", str(other), "--img_size", "64"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("main_train_ae.py: error:")
    assert "autoenc/checkpoint.pth" in err
    assert re.search(r"missing \d+: decoder\.conv_blocks\.0\.attn\.2\.k\.bias", err)
    assert re.search(r"mis-shaped \d+: decoder\.conv_blocks\.0\.attn\.0\.k\.bias \[64\] vs model \[128\]", err)
    assert not (tmp_path / "out" / "checkpoint.pth").exists()


# ---- pieces -----------------------------------------------------------------------------


def test_allocate_codes_is_proportional():
    assert allocate_codes([0, 1, 4, 16, 64], 4096) == [0, 48, 193, 771, 3084]
    assert sum(allocate_codes([3, 3, 3], 10)) == 10
    with pytest.raises(ValueError, match="no latent statistics"):
        allocate_codes([0, 0], 8)


def test_initial_codebook_follows_scale_statistics():
    stats = LatentStatistics(3, 2)
    stats.add(torch.tensor([1, 1, 2, 2, 2, 2, 2, 2]),
              torch.tensor([[1.0, 0]] * 2 + [[0, 5.0], [0, 7.0]] * 3))
    mean, std = stats.mean_std()
    torch.testing.assert_close(mean, torch.tensor([[0, 0], [1.0, 0], [0, 6.0]], dtype=torch.float64))
    torch.testing.assert_close(std, torch.tensor([[0, 0], [0, 0], [0, 1.0]], dtype=torch.float64))
    codes = initial_codebook(stats, 8, torch.Generator().manual_seed(0))
    assert codes.shape == (8, 2)
    assert torch.equal(codes[:2], torch.tensor([[1.0, 0]] * 2))  # 2 of 8 vectors came from scale 1
    assert torch.equal(codes[2:, 0], torch.zeros(6)) and not torch.equal(codes[2:, 1], torch.full((6,), 6.0))


def test_reinit_dead_codes_redraws_only_unused_ones():
    weight = torch.nn.Parameter(torch.randn(4, 2))
    optimizer = torch.optim.Adam([weight])
    weight.grad = torch.ones_like(weight)
    optimizer.step()
    before = weight.detach().clone()
    stats = LatentStatistics(4, 2)
    stats.add(torch.tensor([0, 0, 2]), torch.tensor([[1.0, 1.0], [1.0, 1.0], [3.0, -2.0]]))
    assert reinit_dead_codes(weight, stats, torch.Generator().manual_seed(0), optimizer) == 2
    assert torch.equal(weight[[0, 2]], before[[0, 2]])
    for row in weight[[1, 3]].detach():  # used codes have zero spread here: exact copies of a used mean
        assert row.tolist() in ([1.0, 1.0], [3.0, -2.0])
    state = optimizer.state[weight]
    assert state["exp_avg"][[1, 3]].abs().sum() == 0 and state["exp_avg"][[0, 2]].abs().sum() > 0


def test_perplexity_is_the_effective_number_of_codes_used():
    torch.testing.assert_close(perplexity(torch.tensor([5.0, 5.0, 0, 0])), torch.tensor(2.0))
    torch.testing.assert_close(perplexity(torch.tensor([0, 7.0, 0])), torch.tensor(1.0))


def test_step_batches_resume_mid_epoch():
    full = list(StepBatches(10, 4, seed=3, start_step=0, total_steps=7))
    assert list(StepBatches(10, 4, seed=3, start_step=4, total_steps=7)) == full[4:]
    flat = [i for batch in full for i in batch]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert flat[:10] != flat[10:20]


def test_the_command_line_overrides_the_config_and_bad_keys_are_refused(tmp_path):
    config = make_config("c.yaml", {"lr": "1e-3", "batch_size": 8, "train_all": True},
                         {"data_path": "d", "output_dir": "o", "batch_size": 4})
    assert (config.lr, config.batch_size, config.train_all) == (1e-3, 4, True)
    with pytest.raises(ValueError, match=r"c\.yaml: unknown key 'args\.learning_rate'"):
        make_config("c.yaml", {"learning_rate": 1}, {"data_path": "d", "output_dir": "o"})
    with pytest.raises(ValueError, match=r"^c\.yaml: args\.batch_size must be an integer, got 2\.5$"):
        make_config("c.yaml", {"batch_size": 2.5}, {"data_path": "d", "output_dir": "o"})
    with pytest.raises(ValueError, match="init_checkpoint is required"):
        make_config("c.yaml", {}, {"data_path": "d", "output_dir": "o"})
    with pytest.raises(ValueError, match="output_dir must be given"):
        make_config("c.yaml", {}, {"data_path": "d"})
