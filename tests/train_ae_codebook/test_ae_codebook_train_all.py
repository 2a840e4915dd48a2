"""Small autoencoders from scratch (--train_all) and their evaluation on real digits."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.models.vgg import cfgs, make_layers

from models.autoencoder import load_autoencoder
from train_ae_codebook import main_evaluate_ae
from train_ae_codebook.evaluation import evaluate_autoencoder, psnr
from train_ae_codebook.images import ImageFiles
from train_ae_codebook.train_config import AETrainConfig
from train_ae_codebook.training import autoencoder_config, build_autoencoder, train_autoencoder
from common.digits import write_digits_imagefolder

REPO = Path(__file__).resolve().parents[2]
DIGITS_CONFIG = REPO / "train_ae_codebook" / "autoencoder_config_digits.yaml"
SCALES = [1, 2, 4, 8]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(train folder of 96 digits, val folder of 32 digits), 32 px."""
    root = write_digits_imagefolder(tmp_path_factory.mktemp("digits"), size=32)
    subsets = []
    for split, per_class in (("train", 10), ("val", 3)):
        target = tmp_path_factory.mktemp(split)
        for folder in sorted((root / split).iterdir()):
            for png in sorted(folder.glob("*.png"))[:per_class]:
                shutil.copy(png, target / f"{folder.name}_{png.name}")
        subsets.append(target)
    return subsets


def digits_config(train, output_dir, **changes) -> AETrainConfig:
    settings = dict(config_path=str(DIGITS_CONFIG), data_path=str(train), output_dir=str(output_dir), device="cpu",
                    train_all=True, min_size=4, batch_size=8, epochs=2, init_steps=8, lr=3e-3,
                    dead_code_interval=8, log_every=8, num_workers=0, tensorboard=False)
    settings.update(changes)
    return AETrainConfig(**settings)


def evaluate(model, val):
    return evaluate_autoencoder(model, DataLoader(ImageFiles(val, 32), batch_size=16), SCALES)


def test_train_all_lowers_reconstruction_error(digits, tmp_path):
    train, val = digits
    config = digits_config(train, tmp_path)
    before = evaluate(build_autoencoder(config, autoencoder_config(config)), val)
    out = train_autoencoder(config)
    after = evaluate(load_autoencoder(out / "autoencoder_config.yaml", out / "checkpoint.pth"), val)
    gains = [a["psnr"] - b["psnr"] for a, b in zip(after["scales"], before["scales"])]
    assert min(gains) > 1 and gains[-1] > 3, gains  # dB, every scale; most at full size
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[-1]["loss_recon"] < 0.8 * records[0]["loss_recon"]
    assert after["codebook_usage"] > 0.2


def test_train_all_with_perceptual_loss_logs_a_positive_perceptual_term(digits, tmp_path):
    train, _ = digits
    torch.manual_seed(0)
    vgg = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}
    torch.save(vgg, tmp_path / "vgg16.pth")
    config = digits_config(train, tmp_path / "out", perceptual_weights=str(tmp_path / "vgg16.pth"),
                           epochs=0.5, init_steps=2, log_every=2)
    out = train_autoencoder(config)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(r["loss_perceptual"] > 0 for r in records)
    assert all(r["loss"] > r["loss_recon"] + r["loss_perceptual"] * 0.99 for r in records)

    del vgg["features.28.bias"]
    torch.save(vgg, tmp_path / "vgg16.pth")
    with pytest.raises(ValueError, match=r"vgg16\.pth \(VGG16 features\).*missing 1: 28\.bias"):
        train_autoencoder(digits_config(train, tmp_path / "out2", perceptual_weights=str(tmp_path / "vgg16.pth")))


def test_psnr_in_decibels_of_the_clamped_images():
    x = torch.zeros(2, 3, 4, 4)
    # 0.2 in [-1, 1] is 0.1 in [0, 1]: MSE 0.01, 20 dB; clamping keeps an overshoot at the range end.
    torch.testing.assert_close(psnr(x + 0.2, x), torch.tensor([20.0, 20.0]))
    torch.testing.assert_close(psnr(torch.full_like(x, 3.0), torch.full_like(x, 0.8)), torch.full((2,), 20.0))


def test_evaluation_reports_psnr_and_codebook_usage_per_scale(tiny_dir, digits, tmp_path, capsys):
    _, val = digits
    model = load_autoencoder(tiny_dir / "autoenc" / "autoencoder_config.yaml", tiny_dir / "autoenc" / "checkpoint.pth")
    results = evaluate(model, val)
    imgs = torch.stack([ImageFiles(val, 32)[i] for i in range(len(ImageFiles(val, 32)))])
    small = torch.nn.functional.interpolate(imgs, size=(16, 16), mode="bilinear", align_corners=False)
    with torch.no_grad():
        zq, indices = model.quantize_latents(model.encode(small))
        expected = psnr(model.decode(zq), small).mean()
    scale4 = results["scales"][2]
    assert (scale4["size"], scale4["image_size"]) == (4, 16)
    assert scale4["psnr"] == pytest.approx(float(expected), abs=1e-4)
    assert scale4["codebook_usage"] == pytest.approx(len(indices.unique()) / 64)
    assert results["num_images"] == 30 and 0 < results["codebook_usage"] <= 1

    main_evaluate_ae.main(["--autoenc_dir", str(tiny_dir / "autoenc"), "--data_path", str(val),
                           "--num_workers", "0", "--max_images", "8", "--output_file", str(tmp_path / "r.json")])
    table = capsys.readouterr().out
    assert "PSNR" in table and "8 images" in table
    written = json.loads((tmp_path / "r.json").read_text())
    assert [r["size"] for r in written["scales"]] == SCALES

    with pytest.raises(SystemExit) as exit_info:
        main_evaluate_ae.main(["--autoenc_dir", str(tiny_dir / "autoenc"), "--data_path", str(val),
                               "--scales", "1,2,3"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == \
        "main_evaluate_ae.py: error: the largest scale must be img_size / stride = 8, got 3"


def test_script_reports_bad_input_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "train_ae_codebook/main_train_ae.py", "--config", str(DIGITS_CONFIG),
                             "--data_path", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    assert result.stderr == f"main_train_ae.py: error: data folder not found: {tmp_path / 'missing'}\n"
