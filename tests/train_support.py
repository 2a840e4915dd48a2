"""Shared set-up of the training tests: a small slice of the real digits ImageFolder and a tiny config."""
import shutil
from pathlib import Path

import yaml

from common.digits import write_digits_imagefolder
from training.config import TrainConfig
from training.token_cache import create_cache

REPO = Path(__file__).resolve().parents[1]
TINY_CPU_CONFIG = REPO / "configs" / "config_tiny_cpu.yaml"


def digits_subset(tmp_path_factory, per_class: int, val_per_class: int = 0) -> Path:
    """A new <root>/train/<digit>/*.png with `per_class` real digits per class (32 px), and a val/ split.
    All digits are written once per test session and shared."""
    full = write_digits_imagefolder(tmp_path_factory.getbasetemp() / "digits_all", size=32)
    root = tmp_path_factory.mktemp("digits")
    for split, count in (("train", per_class), ("val", val_per_class)):
        for class_dir in sorted((full / split).iterdir()):
            dst = root / split / class_dir.name
            dst.mkdir(parents=True, exist_ok=True)
            for png in sorted(class_dir.glob("*.png"))[:count]:
                shutil.copy(png, dst / png.name)
    return root


def tiny_config(path: Path, tiny_dir: Path, **args) -> Path:
    """configs/config_tiny_cpu.yaml with the fixture's autoencoder by absolute path and `args` merged."""
    data = yaml.safe_load(TINY_CPU_CONFIG.read_text())
    autoenc = data["model"]["autoenc"]
    autoenc["config_path"] = str(tiny_dir / "autoenc" / "autoencoder_config.yaml")
    autoenc["checkpoint_path"] = str(tiny_dir / "autoenc" / "checkpoint.pth")
    data["args"].update(args)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


FAST_ARGS = dict(device="cpu", num_workers=0, progress=False, log_freq=1, eval_freq=0, warmup_epochs=0.0,
                 batch_size=8, lr=0.003, lr_schedule="constant", ema_rate=0.9, save_freq=1, epochs=1)


def cached_tiny_config(folder: Path, tiny_dir: Path, data: Path) -> TrainConfig:
    """The tiny config with FAST_ARGS training on `data` from its token cache, made under `folder`."""
    path = tiny_config(folder / "tiny.yaml", tiny_dir, **FAST_ARGS)
    config = TrainConfig.load(path, data_path=str(data), cache_path=str(folder / "cache"), use_cache=True)
    create_cache(config)
    return config
