"""Settings of an autoencoder training run: defaults, then the autoencoder config's `args:` section, then
the command line (common/config.py)."""
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from common.config import ConfigError, Layer, make, option, recheck, yaml_section
from common.folders import check_outside

RECON_LOSSES = ("l1", "l2")
REQUIRED = "required: here or in the config's args: section"


@dataclass
class AETrainConfig:
    config_path: str = option("autoencoder_config.yaml (`model.params`, optional `args:` defaults)", cli=False,
                              path=True)
    data_path: str = option("folder searched recursively for images", default_text=REQUIRED, path=True)
    output_dir: str = option("where autoencoder_config.yaml, checkpoint.pth and logs go", default_text=REQUIRED,
                             path=True)
    init_checkpoint: str | None = option("LlamaGen vq_ds16_c2i.pt (or one of our checkpoint.pth): encoder and "
                                         "decoder weights; its codebook is ignored. Required unless --train_all",
                                         None, path=True)
    train_all: bool = option("train encoder, decoder and codebook from scratch (small datasets) instead of "
                             "requantizing (the codebook alone)", False)
    n_embed: int | None = option("codebook size", None, ge=1, default_text="the config's")
    img_size: int | None = option("largest image size in pixels", None, ge=1, default_text="the config's resolution")
    min_size: int = option("smallest image size in pixels drawn for a step", 16, ge=1)
    batch_size: int = option("images per step", 64, ge=1)
    epochs: float = option("passes over the images", 1.0, gt=0)
    init_steps: int = option("steps gathering per-scale latent statistics before the codebook is initialised "
                             "from them (with train_all the autoencoder trains unquantized meanwhile)", 100, ge=1)
    lr: float = option("peak learning rate, cosine-decayed to 0 over the steps after init_steps", 1e-3, gt=0)
    weight_decay: float = option("AdamW weight decay", 0.0, ge=0)
    commitment_weight: float = option("weight of the commitment loss", 0.25, ge=0)
    codebook_weight: float = option("weight of the codebook loss", 1.0, gt=0)
    dead_code_interval: int = option("steps between re-initialisations of codes unused since the last one", 200,
                                     ge=1)
    recon_loss: str = option("reconstruction loss (train_all only)", "l1", choices=RECON_LOSSES)
    perceptual_weights: str | None = option("local torchvision VGG16 weights file: adds a perceptual loss "
                                            "(train_all only)", None, path=True)
    perceptual_weight: float = option("weight of the perceptual loss", 1.0, ge=0)
    log_every: int = option("steps between logged statistics", 50, ge=1)
    save_every: int = option("steps between checkpoints", 1000, ge=1)
    num_workers: int = option("data loader worker processes", 4, ge=0)
    device: str | None = option("cuda, cuda:N or cpu", None, default_text="cuda when available")
    seed: int = option("seeds the data order, sizes and initialisation", 0, ge=0)
    tensorboard: bool = option("write TensorBoard events to output_dir", True)

    def validate(self):
        """Every value's bounds (also for configs made in Python), then the combinations."""
        recheck(self)  # also refuses a nan or infinite number
        if not self.train_all and self.init_checkpoint is None:
            raise ConfigError("init_checkpoint is required to requantize (or set train_all)")
        if not self.train_all and self.perceptual_weights is not None:
            raise ConfigError("perceptual_weights only applies with train_all (requantization has no "
                              "reconstruction loss)")
        check_outside(self.output_dir, "--output_dir", self.data_path, "--data_path")  # images are found recursively

    def total_steps(self, num_images: int) -> int:
        return math.ceil(self.epochs * num_images / self.batch_size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_config(config_path, yaml_args: dict, overrides: dict, command_line: bool = False) -> AETrainConfig:
    """Defaults < the config file's `args:` section < `overrides` (keyword values, or the options given on
    the command line). Unknown keys are errors naming the key; values are converted to the field types."""
    return make(AETrainConfig, yaml_section(yaml_args, config_path, "args"),
                Layer(overrides, None, "--" if command_line else "", from_text=command_line),
                config_path=str(Path(config_path)))
