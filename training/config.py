"""The training configuration: the `args:` section of a config file plus command-line overrides."""
import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from models.checkpoint import checkpoint_paths, read_config

LR_SCHEDULES = ("constant", "step", "cosine")
PRECISIONS = ("bf16", "fp16", "fp32")
DEVICES = ("cuda", "cpu")
# Keys that describe one run rather than the recipe: left out of the `args:` section written to
# an output folder's config.yaml, so that training again from that file starts a new run.
RUN_ONLY_KEYS = ("config", "output_dir", "resume", "weights_init", "create_cache", "device")


def _help(text: str, choices=None, **kwargs):
    return field(metadata={"help": text, "choices": choices}, **kwargs)


@dataclass
class TrainConfig:
    config: str | None = _help("YAML file with `model:` and `args:` sections (default with --resume: the "
                               "resumed folder's config.yaml)", default=None)
    # data
    data_path: str | None = _help("ImageFolder root; training images are read from <data_path>/train", default=None)
    output_dir: str | None = _help("folder for checkpoints, config.yaml, args.yaml, logs and samples "
                                   "(default with --resume: the resumed folder)", default=None)
    device: str | None = _help("cuda or cpu (default: cuda when available)", DEVICES, default=None)
    seed: int = _help("seeds data order, crops, regularisers and samples", default=0)
    mirrored_crops: bool = _help("draw the five mirrored crops of the ten too (turn off where mirroring "
                                 "changes what an image shows, e.g. digits)", default=True)
    num_workers: int = _help("data loader worker processes", default=8)
    pin_mem: bool = _help("pin host memory for faster host-to-GPU copies", default=True)
    progress: bool = _help("show tqdm progress bars", default=True)
    # token cache
    create_cache: bool = _help("encode every image's ten crops at all scales into the token cache "
                               "(resumable), then stop unless --use_cache is given", default=False)
    use_cache: bool = _help("train from the token cache instead of encoding images on the fly", default=False)
    cache_path: str | None = _help("token cache folder (default: <data_path>/token_cache_<size>px_<scales>)",
                                   default=None)
    cache_shard_size: int = _help("images per cache shard (the unit of resuming an interrupted --create_cache)",
                                  default=10000)
    cache_batch_size: int = _help("images per encoder batch while creating the cache (each gives ten crops)",
                                  default=32)
    # optimisation
    batch_size: int = _help("images per process and iteration (effective batch: batch_size x accum_iter x "
                            "processes)", default=64)
    accum_iter: int = _help("iterations whose gradients are accumulated into one optimizer step", default=1)
    epochs: int = _help("total epochs; an epoch is one pass over the images (one random crop of each)",
                        default=100)
    lr: float = _help("peak learning rate", default=1e-4)
    lr_schedule: str = _help("applied per iteration after the warm-up", LR_SCHEDULES, default="constant")
    lr_steps: list[int] = _help("epochs at which the step schedule multiplies the rate by lr_gamma",
                                default_factory=list)
    lr_gamma: float = _help("factor of each step of the step schedule", default=0.1)
    min_lr: float = _help("final rate of the cosine schedule", default=0.0)
    warmup_epochs: float = _help("linear warm-up from 0, in epochs", default=1.0)
    weight_decay: float = _help("AdamW weight decay of >= 2-D weights (never biases or 1-D parameters)",
                                default=0.01)
    betas: list[float] = _help("AdamW betas", default_factory=lambda: [0.9, 0.95])
    grad_clip: float = _help("clip the gradient norm to this value (0: no clipping, norm still logged)",
                             default=3.0)
    precision: str = _help("autocast precision on GPU (the CPU trains in fp32)", PRECISIONS, default="bf16")
    compile: bool = _help("torch.compile the training forward", default=False)
    grad_checkpointing: bool = _help("selective activation checkpointing: keep the outputs of matrix products and "
                                     "attention, recompute the elementwise rest in the backward pass (less than "
                                     "half the activation memory, the same gradients, some extra time)",
                                     default=False)
    ema: bool = _help("keep an exponential moving average of the weights (saved as model_ema)", default=True)
    ema_rate: float = _help("EMA decay per optimizer step", default=0.9999)
    # checkpoints
    resume: str | None = _help("checkpoint file or folder to continue from (model, EMA, optimizer, scaler, "
                               "epoch, data order)", default=None)
    weights_init: str | None = _help("checkpoint file or folder whose model weights start a new run", default=None)
    save_freq: int = _help("write checkpoint-<epoch>.pth every this many epochs and after the last one "
                           "(checkpoint-last.pth is written after every epoch)", default=10)
    # logging
    log_freq: int = _help("iterations between logged (host-synchronised) training statistics", default=100)
    # inline evaluation
    eval_freq: int = _help("epochs between sample grids and inline FID/IS (0: never)", default=10)
    eval_num_samples: int = _help("samples for inline FID/IS", default=10000)
    eval_batch_size: int = _help("samples per generation batch and process", default=64)
    eval_grid_samples: int = _help("samples in the logged image grid", default=32)
    eval_reference_data_path: str | None = _help("reference images for inline FID/IS: a folder of images "
                                                 "(searched recursively) or an .npz with arr_0", default=None)
    eval_inception_weights: str | None = _help("torch-fidelity Inception weights file (default: torch hub's "
                                               "checkpoints folder); without it inline FID/IS is skipped",
                                               default=None)
    cfg: float = _help("classifier-free guidance weight of inline samples", default=2.0)
    cfg_start_step: int = _help("first step that uses guidance", default=5)
    steps_per_scale: int = _help("sampling steps per scale", default=4)
    temperature: float = _help("sampling temperature", default=1.0)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_sources(cls, args_section: dict, overrides: dict | None = None, source: str = "config") -> "TrainConfig":
        """Defaults, then the `args:` section (checked against the known keys), then `overrides`."""
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in (args_section or {}).items():
            if key not in hints or key == "config":
                raise ValueError(f"{source}: unknown key 'args.{key}'")
            values[key] = _coerce(value, hints[key], f"{source}: args.{key}")
        for key, value in (overrides or {}).items():
            if key not in hints:
                raise ValueError(f"unknown training option '{key}'")
            values[key] = _coerce(value, hints[key], f"option {key}")
        config = cls(**values)
        config.validate()
        return config

    @classmethod
    def load(cls, config_path=None, **overrides) -> "TrainConfig":
        """From a config file (or, with `resume=`, the resumed folder's config.yaml) and overrides."""
        if config_path is None and overrides.get("resume"):
            _, config_path = checkpoint_paths(overrides["resume"])
        if config_path is None:
            raise ValueError("no config: pass --config FILE (or --resume a run folder)")
        _, args_section = read_config(config_path)
        return cls.from_sources(args_section, {**overrides, "config": str(config_path)}, str(config_path))

    def validate(self):
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("precision", self.precision, PRECISIONS)
        if self.device is not None:
            _choice("device", self.device, DEVICES)
        for name in ("batch_size", "accum_iter", "epochs", "log_freq", "save_freq", "cache_shard_size",
                     "cache_batch_size", "eval_batch_size", "steps_per_scale"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "eval_freq", "eval_num_samples", "eval_grid_samples", "cfg_start_step"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "warmup_epochs", "grad_clip", "cfg", "temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.ema_rate < 1:
            raise ValueError(f"ema_rate must be in [0, 1), got {self.ema_rate}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1), got {self.betas}")
        if self.lr_gamma <= 0:
            raise ValueError(f"lr_gamma must be > 0, got {self.lr_gamma}")
        if self.resume and self.weights_init:
            raise ValueError("pass either --resume (continue a run) or --weights_init (new run), not both")

    # ---- records -----------------------------------------------------------------------------
    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def namespace(self) -> argparse.Namespace:
        """The `args` entry of a published checkpoint."""
        return argparse.Namespace(**self.as_dict())

    def recipe(self) -> dict:
        """The `args:` section for an output folder's config.yaml."""
        return {k: v for k, v in self.as_dict().items() if k not in RUN_ONLY_KEYS}

    def resolved_output_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        if self.resume:
            return checkpoint_paths(self.resume)[0].parent
        raise ValueError("no output folder: pass --output_dir DIR")


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _coerce(value, hint, where):
    """A YAML or Python value as the field's type; YAML reads `1e-4` as a string, hence str -> float."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = _non_optional(hint)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list of {item.__name__}, got {value!r}")
        return [_coerce(v, item, where) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if hint is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ValueError(f"{where} must be a string, got {value!r}")
    if hint in (int, float) and not isinstance(value, bool):
        try:
            number = float(value) if isinstance(value, str) else value
            if hint is int:
                if float(number) != int(number):
                    raise ValueError
                return int(number)
            return float(number)
        except (TypeError, ValueError, OverflowError):
            pass
    raise ValueError(f"{where} must be {'an integer' if hint is int else 'a number'}, got {value!r}")


def _non_optional(hint):
    """`X | None` -> X; other hints unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """One `--key` per TrainConfig field; only options given on the command line appear in the result."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        help_text = f.metadata["help"] + ("" if default is None or f.name == "config" else f" (default: {default})")
        kwargs = {"default": argparse.SUPPRESS, "help": help_text.replace("%", "%%")}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        base = _non_optional(hint)
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is list:
            kwargs.update(nargs="*", type=typing.get_args(base)[0])
        else:
            kwargs["type"] = base
        if f.name == "config":
            kwargs["metavar"] = "FILE"
        parser.add_argument(f"--{f.name}", **kwargs)
    return parser
