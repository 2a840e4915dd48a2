"""The published configs train here unchanged (issue 13), and L-4x starts from L-2x weights."""
import re

import pytest
import torch
import yaml

import main
from models.checkpoint_format import load_checkpoint_file
from train_support import REPO, digits_subset
from training.config import TrainConfig
from training.engine import setup
from training.metrics_log import read_metrics

TINY_WIDTH = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2}
AUTOENC_FILES = {"config_path": "autoencoder_config.yaml", "checkpoint_path": "checkpoint.pth"}
COMMAND_LINE = {"data_path", "batch_size", "epochs", "num_workers"}  # what the test run sets


@pytest.fixture(scope="module")
def ten_digits(tmp_path_factory):
    return digits_subset(tmp_path_factory, per_class=1)


def shrunk(name: str, tiny_dir, folder):
    """configs/<name> with its args: section as published and its model at 32 px with the width shrunk,
    on the tiny_2x fixture's autoencoder (10 classes)."""
    data = yaml.safe_load((REPO / "configs" / name).read_text())
    data["model"].update(img_size=32, num_classes=10, llama_config=TINY_WIDTH)
    data["model"]["autoenc"].update({k: str(tiny_dir / "autoenc" / f) for k, f in AUTOENC_FILES.items()})
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, data["args"]


@pytest.mark.parametrize("name", ["config_256_S.yaml", "config_256_L.yaml"])
def test_published_config_trains_here(name, tiny_dir, ten_digits, tmp_path):
    path, published_args = shrunk(name, tiny_dir, tmp_path)
    assert published_args == yaml.safe_load((REPO / "configs" / name).read_text())["args"]
    # Ten images in batches of 5: two iterations, the second in the published one-epoch warm-up.
    main.main(["--config", str(path), "--data_path", str(ten_digits), "--output_root", str(tmp_path / "runs"),
               "--device", "cpu", "--batch_size", "5", "--epochs", "1", "--num_workers", "0", "--no-progress",
               "--log_freq", "1", "--eval_grid_samples", "4"])
    (run,) = (tmp_path / "runs").iterdir()  # no output_dir: a new run folder under output_root
    assert re.fullmatch(r"\d{6}-\d{4}-[0-9a-f]{8}", run.name), run.name
    args = load_checkpoint_file(run / "checkpoint-last.pth")["args"]
    for key, value in published_args.items():
        if key not in COMMAND_LINE:
            assert getattr(args, key) == ([value] if key == "cfg" else value), key
    steps = [m for m in read_metrics(run) if "iteration" in m]
    assert [m["lr"] for m in steps] == pytest.approx([0.0, 0.5 * published_args["lr"]])
    assert (run / "samples" / "epoch-0.png").is_file()  # eval_freq 5: the last epoch is evaluated


def test_weights_init_from_another_scale_ratio(tiny_dir, ten_digits, tmp_path):
    """As L-4x from L-2x: the tiny ratio-2 model (scales 1, 2, 4, 8) starts a ratio-8 one (scales 1, 8)."""
    data = yaml.safe_load((tiny_dir / "config.yaml").read_text())
    data["model"]["scale_ratio"] = 8
    for key in ("config_path", "checkpoint_path"):
        data["model"]["autoenc"][key] = str(tiny_dir / data["model"]["autoenc"][key])
    path = tmp_path / "ratio8.yaml"
    path.write_text(yaml.safe_dump({"model": data["model"], "args": {}}))
    config = TrainConfig.load(path, data_path=str(ten_digits), output_dir=str(tmp_path / "out"), device="cpu",
                              weights_init=str(tiny_dir), batch_size=5, num_workers=0)
    run = setup(config)
    assert run.model.scale_sizes == [1, 8]
    source = load_checkpoint_file(tiny_dir / "checkpoint-last.pth")["model"]
    target = run.model.state_dict()
    # position ids of the ratio-2 model: scale 1 at 0, 2 at 1, 4 at 5, 8 at 21, then the special ids at 85
    for key in ("embed_positions.weight", "llama.rotary_emb.position_embeddings.parametrizations.weight.original"):
        src, dst = source[key], target[key]
        assert dst.shape[0] == src.shape[0] - 4 - 16
        assert torch.equal(dst[0], src[0]) and torch.equal(dst[1:65], src[21:85])
        assert torch.equal(dst[65:], src[85:])
    for key, value in source.items():
        if "position" not in key:
            assert torch.equal(target[key], value), key
    run.close()


def test_weights_init_of_another_architecture_is_one_clear_error(tiny_dir, ten_digits, tmp_path):
    data = yaml.safe_load((REPO / "configs" / "config_tiny_cpu.yaml").read_text())  # 2 layers, tiny_2x has 3
    data["model"]["autoenc"].update({k: str(tiny_dir / "autoenc" / f) for k, f in AUTOENC_FILES.items()})
    data["model"]["llama_config"]["hidden_size"] = 32
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(data))
    config = TrainConfig.load(path, data_path=str(ten_digits), output_dir=str(tmp_path / "out"),
                              weights_init=str(tiny_dir), batch_size=5, num_workers=0)
    with pytest.raises(ValueError, match="weights_init needs the same architecture"):
        setup(config)
    assert not (tmp_path / "out").exists()

