"""Models with random weights at the paper's shapes, for benchmarks (no downloads needed)."""
from pathlib import Path

import torch

from models.checkpoint import build_generator
from models.checkpoint_format import read_config

REPO = Path(__file__).resolve().parents[1]
PUBLISHED_AUTOENCODER_CONFIG = REPO / "train_ae_codebook" / "autoencoder_config.yaml"
TINY_MODEL_SECTION = {
    "img_size": 256, "class_cond": True, "num_classes": 1000, "num_mixing_layers": 2, "scale_ratio": 2,
    "random_block_size": True, "random_replace": 0.1, "use_head_mlp": False,
    "llama_config": {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4, "num_hidden_layers": 2},
}


def model_section(name: str) -> dict:
    """The `model:` section of a published config ('S', 'L', 'L_4x') or of a CPU-sized 'tiny' one,
    pointing at the committed copy of the published autoencoder config."""
    if name == "tiny":
        section = dict(TINY_MODEL_SECTION)
    else:
        section, _ = read_config(REPO / "configs" / f"config_256_{name}.yaml")
    section["autoenc"] = {"config_path": str(PUBLISHED_AUTOENCODER_CONFIG)}
    return section


def build_random_model(name: str, device, dtype=torch.float32):
    torch.manual_seed(0)
    with torch.device(device):
        model = build_generator(model_section(name), REPO, load_autoencoder_weights=False, source=name)
    return model.to(dtype).eval()
