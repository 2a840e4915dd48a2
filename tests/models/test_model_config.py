"""The `model:` section: every committed config builds, the published key lists match, published
defaults fill absent keys, and bad values get one line naming file, key and value."""
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from models import GeneratorConfig, build_generator, load_model
from models.checkpoint_format import read_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
PUBLISHED_AUTOENCODER_CONFIG = REPO / "train_ae_codebook" / "autoencoder_config.yaml"


def published_lists(published_keys_dir) -> dict:
    """Per published key list: (scale sizes, parameters without the autoencoder) from its first line
    ("# L-2x: scale sizes [...]; AR parameters (without autoencoder) N") and its keys and shapes."""
    lists = {}
    for path in sorted(published_keys_dir.glob("*.txt")):
        lines = path.read_text().splitlines()
        match = re.match(r"# (\S+): scale sizes (\[.*\]); AR parameters \(without autoencoder\) (\d+)", lines[0])
        keys = {key: json.loads(shape) for key, shape, _ in (line.split("\t") for line in lines[1:] if line)}
        lists[match[1]] = (json.loads(match[2]), int(match[3]), keys)
    return lists


def meta_model(config_path: Path):
    section, _ = read_config(config_path)
    autoencoder = section["autoenc"]["config_path"]
    if not (config_path.parent / autoencoder).exists():
        # Made elsewhere (a download, the demo's first stage): the published autoencoder's config,
        # committed in train_ae_codebook/, stands in.
        section["autoenc"]["config_path"] = str(PUBLISHED_AUTOENCODER_CONFIG)
    with torch.device("meta"):
        return build_generator(section, config_path.parent, load_autoencoder_weights=False, source=str(config_path))


def test_every_config_builds_and_matches_its_published_key_list(published_keys_dir):
    lists = published_lists(published_keys_dir)
    assert len(lists) == 3 and len(CONFIGS) >= 3
    matched = set()
    for path in CONFIGS:
        model = meta_model(path)
        params = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("autoenc."))
        for name, (scales, count, keys) in lists.items():
            if (scales, count) == (model.scale_sizes, params):
                assert {k: list(v.shape) for k, v in model.state_dict().items()} == keys, (path.name, name)
                matched.add(name)
    assert matched == set(lists)  # each published model has a config here that builds it exactly


def section(**changes) -> dict:
    base = {"img_size": 32, "autoenc": {"config_path": "autoenc/autoencoder_config.yaml"}}
    base.update(changes)
    return base


def test_absent_keys_take_the_published_defaults(tiny_dir):
    config = GeneratorConfig.from_dict(section())
    assert (config.class_cond, config.num_classes, config.uncond_training_prob, config.scale_ratio, config.scale_min_size,
            config.single_scale, config.num_blocks_per_scale, config.random_block_size, config.random_replace,
            config.random_replace_sampled, config.use_head_mlp, config.head_weights_l2_loss, config.num_mixing_layers) == \
        (False, 0, 0.1, 2.0, 1, False, 8, False, 0.0, False, True, 1e-3, 2)
    lc = config.llama_config
    assert (lc.hidden_size, lc.intermediate_size, lc.num_attention_heads, lc.num_hidden_layers, lc.rms_norm_eps) == \
        (256, 1024, 8, 8, 1e-6)
    # A llama_config mapping without intermediate_size means Llama's own width, 8/3 of hidden_size.
    model = build_generator(section(llama_config={"hidden_size": 64, "num_attention_heads": 2,
                                                  "num_hidden_layers": 1}), tiny_dir, load_autoencoder_weights=False)
    assert model.transformer.layers[0].feed_forward.w1.out_features == 256  # int(8 * 64 / 3) = 170, rounded up
    assert model.transformer.layers[0].attention_norm.eps == 1e-6
    assert model.layout().block.max().item() + 1 == sum(min(8, s * s) for s in model.scale_sizes)


@pytest.mark.parametrize("value,rows", [("all", 3), (None, 3), (0, 0), (2, 2), (5, 5)])
def test_num_mixing_layers_sets_the_mixed_rows(tiny_dir, value, rows):
    """An int (0: no mixing; more than the layers: every layer, extra rows unused, as published),
    or all / null: every layer."""
    model = build_generator(section(class_cond=True, num_classes=10, num_mixing_layers=value,
                                    llama_config={"hidden_size": 64, "num_attention_heads": 4,
                                                  "num_hidden_layers": 3}),
                            tiny_dir, load_autoencoder_weights=False)
    assert model.transformer.rotary_emb.mixing_coeffs.shape == (rows, 4)
    with torch.no_grad():
        logits = model.eval()([torch.zeros(1, s, s, dtype=torch.long) for s in model.scale_sizes], torch.tensor([0]))
    assert logits.shape == (1, 85, 64)


def test_single_scale_and_rms_norm_eps_reach_the_model(tiny_dir):
    model = build_generator(section(single_scale=True, scale_ratio=4, num_blocks_per_scale=3,
                                    llama_config={"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1,
                                                  "rms_norm_eps": 1e-5}), tiny_dir, load_autoencoder_weights=False)
    assert model.scale_sizes == [8] and model.transformer.norm.eps == 1e-5
    assert model.layout().block.max().item() + 1 == 4  # 3 steps on 64 tokens: 21, 21, 21, 1


@pytest.mark.parametrize("changes,key,shown", [
    ({"uncond_training_prob": 2.0}, "model.uncond_training_prob", "2.0"),
    ({"random_replace": -0.5}, "model.random_replace", "-0.5"),
    ({"class_cond": "no"}, "model.class_cond", "'no'"),
    ({"scale_ratio": math.inf}, "model.scale_ratio", "inf"),
    ({"scale_ratio": "x"}, "model.scale_ratio", "'x'"),
    ({"img_size": 0}, "model.img_size", "0"),
    ({"img_size": "abc"}, "model.img_size", "'abc'"),
    ({"num_blocks_per_scale": 0}, "model.num_blocks_per_scale", "0"),
    ({"head_weights_l2_loss": -1}, "model.head_weights_l2_loss", "-1"),
    ({"num_mixing_layers": "some"}, "model.num_mixing_layers", "'some'"),
    ({"num_mixing_layers": -1}, "model.num_mixing_layers", "-1"),
    ({"use_head_mlp": 1}, "model.use_head_mlp", "1"),
    ({"llama_config": {"hidden_size": 64, "num_attention_heads": 5}}, "model.llama_config.num_attention_heads", "5"),
    ({"llama_config": {"hidden_size": 64, "num_attention_heads": 64}}, "model.llama_config.num_attention_heads", "64"),
    ({"llama_config": {"rms_norm_eps": 0}}, "model.llama_config.rms_norm_eps", "0"),
    ({"llama_config": {"num_key_value_heads": 2}}, "model.llama_config.num_key_value_heads", "not supported"),
    ({"llama_config": {"hidden": 64}}, "model.llama_config", "hidden"),
    ({"colour": "red", "label_drop_prob": 0.1}, "unknown key", "label_drop_prob (now uncond_training_prob)"),
    ({"autoenc": {"config_path": 3}}, "model.autoenc.config_path", "3"),
    ({"class_cond": True}, "model.num_classes", "0"),
    ({"num_classes": 10}, "model.num_classes", "10"),
])
def test_bad_values_are_named_in_one_line(changes, key, shown):
    with pytest.raises(ValueError) as err:
        GeneratorConfig.from_dict(section(**changes), source="runs/x/config.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("runs/x/config.yaml: ")
    assert key in message and shown in message, message


def test_a_bad_config_file_is_named_when_loading(tiny_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_dir, folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["model"]["random_replace"] = 1.5
    (folder / "config.yaml").chmod(0o644)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'config.yaml'}: model.random_replace: expected a "
                                                   "number in [0.0, 1.0], got 1.5")):
        load_model(folder)


def test_img_size_not_a_multiple_of_the_stride(tiny_dir):
    expected = r"^cfg.yaml: model.img_size 30 is not a multiple of the autoencoder's stride 4$"
    with pytest.raises(ValueError, match=expected):
        build_generator(section(img_size=30), tiny_dir, load_autoencoder_weights=False, source="cfg.yaml")
