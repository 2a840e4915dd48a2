"""Typed settings of an autoencoder training run, merged from defaults, the config's `args:`
section and the command line (in that order of precedence)."""
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

RECON_LOSSES = ("l1", "l2")


@dataclass
class AETrainConfig:
    config_path: str  # autoencoder_config.yaml (`model.params`, optional `args:` defaults)
    data_path: str  # folder searched recursively for images
    output_dir: str
    # LlamaGen `vq_ds16_c2i.pt` or one of our autoencoder checkpoints: encoder/decoder source.
    init_checkpoint: str | None = None
    # False: requantize (only the codebook trains); True: encoder, decoder and codebook from scratch.
    train_all: bool = False
    n_embed: int | None = None  # codebook size; None keeps the config's
    img_size: int | None = None  # largest image size; None: the config's `resolution`
    min_size: int = 16  # smallest image size drawn (pixels)
    batch_size: int = 64
    epochs: float = 1.0
    # Steps that gather per-scale latent statistics before the codebook is initialised from
    # them; with train_all the autoencoder trains unquantized meanwhile.
    init_steps: int = 100
    lr: float = 1e-3  # cosine-decayed to 0 over the steps after init_steps
    weight_decay: float = 0.0
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    dead_code_interval: int = 200  # steps between re-initialisations of codes unused since the last one
    recon_loss: str = "l1"  # train_all only
    perceptual_weights: str | None = None  # torchvision VGG16 weights file; enables the perceptual loss
    perceptual_weight: float = 1.0
    log_every: int = 50
    save_every: int = 1000
    num_workers: int = 4
    device: str = "cpu"
    seed: int = 0
    tensorboard: bool = True

    def validate(self):
        """ValueError naming the first setting out of range."""
        checks = [
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.epochs > 0 and math.isfinite(self.epochs), "epochs", "must be a positive number"),
            (self.init_steps >= 1, "init_steps", "must be >= 1"),
            (self.n_embed is None or self.n_embed >= 1, "n_embed", "must be >= 1"),
            (self.img_size is None or self.img_size >= 1, "img_size", "must be >= 1"),
            (self.min_size >= 1, "min_size", "must be >= 1"),
            (self.lr > 0, "lr", "must be > 0"),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (self.commitment_weight >= 0, "commitment_weight", "must be >= 0"),
            (self.codebook_weight > 0, "codebook_weight", "must be > 0"),
            (self.dead_code_interval >= 1, "dead_code_interval", "must be >= 1"),
            (self.recon_loss in RECON_LOSSES, "recon_loss", f"must be one of {', '.join(RECON_LOSSES)}"),
            (self.perceptual_weight >= 0, "perceptual_weight", "must be >= 0"),
            (self.log_every >= 1, "log_every", "must be >= 1"),
            (self.save_every >= 1, "save_every", "must be >= 1"),
            (self.num_workers >= 0, "num_workers", "must be >= 0"),
            (self.train_all or self.init_checkpoint is not None, "init_checkpoint",
             "is required to requantize (or set train_all)"),
            (self.train_all or self.perceptual_weights is None, "perceptual_weights",
             "only applies with train_all (requantization has no reconstruction loss)"),
        ]
        for ok, name, problem in checks:
            if not ok:
                raise ValueError(f"{name} {problem}, got {getattr(self, name)!r}")

    def total_steps(self, num_images: int) -> int:
        return math.ceil(self.epochs * num_images / self.batch_size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(name: str, kind, value, source: str):
    """YAML reads `1e-3` as a string and `1` as an int: convert to the field's type or say which key is wrong."""
    if value is None:
        return None
    kinds = [k for k in getattr(kind, "__args__", (kind,)) if k is not type(None)]
    target = kinds[0]
    try:
        if target is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if target is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if target is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: '{name}' expects {target.__name__}, got {value!r}") from None


def make_config(config_path, yaml_args: dict, overrides: dict) -> AETrainConfig:
    """Defaults < the config file's `args:` section < explicit overrides (e.g. the command line).

    Unknown keys in `args:` are errors naming the key; values are converted to the field types."""
    fields = {f.name: f for f in dataclasses.fields(AETrainConfig)}
    values = {}
    for source, items in ((f"{config_path}: args", yaml_args or {}), ("option", overrides)):
        for key, value in items.items():
            if key not in fields or key == "config_path":
                raise ValueError(f"{source}: unknown key '{key}'")
            values[key] = _coerce(key, fields[key].type, value, f"{source}")
    missing = [name for name in ("data_path", "output_dir") if values.get(name) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} must be given (command line or the config's args: section)")
    config = AETrainConfig(config_path=str(Path(config_path)), **values)
    config.validate()
    return config
