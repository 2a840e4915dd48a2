"""The generator as training holds it: built from the config's `model:` section, its initial weights
(seeded, from --weights_init, or the resumed checkpoint's) and where its parts live during the run."""
import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from common.distributed import Placement
from models.checkpoint import build_generator
from models.checkpoint_format import load_state_dict_strict
from models.generator import CheckerboardGenerator
from training.checkpoint import Resumed, init_weights_from, load_training_checkpoint
from training.config import TrainConfig

log = logging.getLogger(__name__)

# Autoencoder parts by use: training reads only the codebook (`quantize`); encoding images needs these
ENCODER_PARTS = ("encoder", "quant_conv")
DECODER_PARTS = ("decoder", "post_quant_conv")


def build_model(config: TrainConfig, model_section: dict, resumed: Resumed | None,
                place: Placement) -> CheckerboardGenerator:
    """The generator to train, in training mode and placed (see `place_model`): built with the run's seed,
    its weights then taken from --weights_init or the resumed checkpoint where there is one."""
    config_path = Path(config.config)
    torch.manual_seed(config.seed)  # the initial weights
    model = build_generator(model_section, config_path.parent, source=str(config_path),
                            load_autoencoder_weights=not (config.resume or config.weights_init))
    if config.weights_init:
        init, init_path = load_training_checkpoint(config.weights_init)
        remapped = init_weights_from(model, init["model"], init_path)
        if remapped and place.rank == 0:
            log.info("weights_init %s: %s copied for the scales both models have", init_path, ", ".join(remapped))
    if resumed is not None:
        load_state_dict_strict(model, resumed.state["model"], str(resumed.path))
    place_model(model, place.device, encoder_on_device=not config.use_cache)
    model.train()
    model.transformer.grad_checkpointing = config.grad_checkpointing
    return model


def place_model(model: CheckerboardGenerator, device, encoder_on_device: bool):
    """Everything on `device` except the autoencoder's decoder, and its encoder too when training from
    the token cache: those stay on the CPU (the state dict is still complete)."""
    model.to(device)
    for name in DECODER_PARTS + (() if encoder_on_device else ENCODER_PARTS):
        getattr(model.autoenc, name).to("cpu")


@contextmanager
def decoder_on(model: CheckerboardGenerator, device):
    """The autoencoder's decoder on `device` (for decoding samples), back on the CPU after."""
    parts = [getattr(model.autoenc, name) for name in DECODER_PARTS]
    for part in parts:
        part.to(device)
    try:
        yield
    finally:
        for part in parts:
            part.to("cpu")
