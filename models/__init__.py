"""The model: scan order and scales, the VQ autoencoder, the generator and its config, loading.

Sampling lives in `models.sampler` (`Sampler`), which this package does not import: the model
knows nothing of generation.
"""
from .autoencoder import AutoencoderConfig, VQModel, load_autoencoder
from .checkerboard import block_sizes, checkerboard_order, checkerboard_rank, scale_sizes
from .checkpoint import build_generator, load_model
from .checkpoint_format import read_config
from .config import GeneratorConfig
from .generator import CheckerboardGenerator

__all__ = [
    "AutoencoderConfig", "VQModel", "load_autoencoder", "block_sizes", "checkerboard_order", "checkerboard_rank",
    "scale_sizes", "build_generator", "load_model", "read_config", "CheckerboardGenerator", "GeneratorConfig",
]
