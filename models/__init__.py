from .autoencoder import AutoencoderConfig, VQModel, load_autoencoder
from .checkerboard import block_sizes, checkerboard_order, checkerboard_rank, scale_sizes
from .checkpoint import build_generator, load_model, read_config
from .generator import CheckerboardGenerator, GeneratorConfig
from .sampler import GenerationOutput

__all__ = [
    "AutoencoderConfig", "VQModel", "load_autoencoder", "block_sizes", "checkerboard_order", "checkerboard_rank",
    "scale_sizes", "build_generator", "load_model", "read_config", "CheckerboardGenerator", "GeneratorConfig",
    "GenerationOutput",
]
