"""The training configuration: the `args:` section of a config file plus command-line overrides.

Keys are the published implementation's (main.py's get_args_parser), with its defaults, so that a
published config means the same here; our earlier names are aliases. Options the published code does
not have (compile, precision, grad_checkpointing, the token-cache settings, ...) follow them.
"""
import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from common.config import ConfigError, Layer, make, option, yaml_section
from common.folders import check_outside
from common.lr_schedule import SCHEDULES
from models.checkpoint import checkpoint_paths
from models.checkpoint_format import read_config
from models.hub import is_hub_reference
from sampling.config import DEFAULT_CFG, DEFAULT_CFG_START_STEP
from training.data import DATASETS, dataset_for_path, image_root

OPTIMIZERS = ("adamw", "adam")
PRECISIONS = ("bf16", "fp16", "fp32")
DEVICES = ("cuda", "cpu")
BLR_BATCH = 256  # lr = blr x batch / 256 when lr is not given
# Keys that describe one run rather than the recipe: left out of the `args:` section written to
# an output folder's config.yaml, so that training again from that file starts a new run.
RUN_ONLY_KEYS = ("config", "output_dir", "resume", "weights_init", "create_cache", "device", "start_epoch",
                 "world_size", "local_rank", "wandb_project", "wandb_run_name")


@dataclass
class TrainConfig:
    config: str | None = option("YAML file with `model:` and `args:` sections", None, metavar="FILE",
                                default_text="with --resume, the resumed folder's config.yaml", path=True)
    # ---- data
    data_path: str = option("training data: an ImageFolder root (images in <data_path>/train/<class>/), or "
                            "torchvision's CelebA or Food101 layout (see --dataset)", "./data/imagenet", path=True)
    dataset: str | None = option("how data_path is laid out", None, choices=DATASETS,
                                 default_text="celeba if the data folder is named celeba, food101 if named "
                                              "food101, else imagefolder (the published rule)")
    mirrored_crops: bool = option("draw the five mirrored crops of the ten too (turn off where mirroring "
                                  "changes what an image shows, e.g. digits)", True)
    num_workers: int = option("data loader worker processes", 4, ge=0)
    pin_mem: bool = option("pin host memory for faster host-to-GPU copies", True, negative_aliases=("no_pin_mem",))
    # ---- output
    output_dir: str | None = option("folder for checkpoints, config.yaml, args.yaml, logs and samples", None,
                                    default_text="with --resume, the resumed folder; else a new "
                                                 "<output_root>/<date-time>-<random id>", path=True)
    output_root: str = option("where runs without --output_dir get their new folder", "./outputs", path=True)
    log_dir: str | None = option("TensorBoard event folder", None, default_text="<output_dir>/tensorboard", path=True)
    progress: bool = option("show tqdm progress bars", True)
    wandb_project: str | None = option("also log the training statistics and sample grids to this Weights & Biases "
                                       "project (wandb's settings apply: `wandb login`, WANDB_MODE=offline, "
                                       "WANDB_DIR)", None, default_text="no W&B logging; wandb is not imported")
    wandb_run_name: str | None = option("the W&B run's name", None, default_text="the output folder's name")
    log_freq: int = option("iterations between logged (host-synchronised) training statistics", 100, ge=1)
    # ---- placement
    device: str | None = option("cuda or cpu", None, choices=DEVICES, default_text="cuda when available")
    seed: int = option("seeds the initial weights, data order, crops, regularisers and samples", 1, ge=0)
    world_size: int = option("accepted for published configs; the process count is torchrun's WORLD_SIZE",
                             1, ge=1, aliases=("world-size",))
    local_rank: int = option("accepted for torch.distributed.launch; the GPU is torchrun's LOCAL_RANK", -1,
                             aliases=("local-rank",))
    dist_url: str = option("process-group initialisation: only env:// (torchrun's environment) is supported",
                           "env://")
    dist_on_itp: bool = option("OpenMPI-launched processes: not supported (launch with torchrun); true is "
                               "refused", False)
    # ---- token cache
    create_cache: bool = option("encode every image's ten crops at all scales into the token cache "
                                "(resumable), then stop unless --use_cache is given", False)
    use_cache: bool = option("train from the token cache instead of encoding images on the fly", False)
    cached_path: str = option("root folder of token caches: a cache is <cached_path>/<dataset name>/train/"
                              "token_cache_<size>px_<scales>", "./data/cached", path=True)
    cache_path: str | None = option("the token cache folder itself, instead of the one under cached_path", None,
                                    path=True)
    cache_shard_size: int = option("images per cache shard (the unit of resuming an interrupted --create_cache)",
                                   10000, ge=1)
    cache_batch_size: int = option("images per encoder batch while creating the cache (each gives ten crops)",
                                   32, ge=1)
    # ---- optimisation
    batch_size: int = option("images per process and iteration (effective batch: batch_size x "
                             "grad_accum_steps x processes)", 16, ge=1)
    grad_accum_steps: int = option("iterations whose gradients are accumulated into one optimizer step", 1, ge=1,
                                   aliases=("accum_iter",))
    epochs: int = option("total epochs; an epoch is one pass over the images (one random crop of each)", 100,
                         ge=1)
    start_epoch: int = option("first epoch of a new run (the schedule counts from it); --resume continues at "
                              "the checkpoint's next epoch instead", 0, ge=0)
    optimizer: str = option("adamw, or adam (whose weight decay is an L2 term in the gradient)", "adamw",
                            choices=OPTIMIZERS)
    lr: float | None = option("peak learning rate", None, ge=0,
                              default_text="blr x batch_size x processes / 256")
    blr: float = option("base learning rate, used when lr is not given: lr = blr x batch_size x processes / "
                        "256 (gradient accumulation does not enter, as in the published code)", 2e-4, ge=0)
    lr_schedule: str = option("applied per iteration after the warm-up", "constant", choices=SCHEDULES)
    lr_step_epochs: list[int] = option("epochs at which the step schedule multiplies the rate by lr_step_factor",
                                       [], ge=0, aliases=("lr_steps",))
    lr_step_factor: float = option("factor of each step of the step schedule", 0.1, gt=0, aliases=("lr_gamma",))
    min_lr: float = option("final rate of the cosine schedule", 5e-6, ge=0)
    warmup_epochs: float = option("linear warm-up from 0, in epochs", 0.0, ge=0)
    weight_decay: float = option("weight decay of >= 2-D weights (never biases or 1-D parameters)", 0.02, ge=0)
    betas: list[float] = option("Adam(W) betas", [0.9, 0.95], ge=0, lt=1)
    clip_grad: float | None = option("clip the gradient norm to this value (none or 0: no clipping; the norm is "
                                     "logged either way)", None, ge=0, aliases=("grad_clip",))
    precision: str = option("autocast precision on GPU (the CPU trains in fp32)", "bf16", choices=PRECISIONS)
    compile: bool = option("torch.compile the training forward", False)
    grad_checkpointing: bool = option("selective activation checkpointing: keep the outputs of matrix products "
                                      "and attention, recompute the elementwise rest in the backward pass (less "
                                      "than half the activation memory, the same gradients, some extra time)",
                                      False)
    ema: bool = option("keep an exponential moving average of the weights (saved as model_ema)", False)
    ema_rate: float = option("EMA decay per optimizer step", 0.9999, ge=0, lt=1)
    # ---- checkpoints
    resume: str | None = option("checkpoint file or folder to continue from (model, EMA, optimizer, scaler, "
                                "epoch, data order); takes precedence over weights_init", None, path=True)
    weights_init: str | None = option("checkpoint file or folder whose model weights start a new run (position "
                                      "tables of another scale ratio are copied for the scales both have)", None,
                                      path=True)
    save_last_freq: int = option("write checkpoint-last.pth every this many epochs and after the last one", 1,
                                 ge=1)
    save_freq: int = option("also keep checkpoint-<epoch>.pth every this many epochs and after the last one", 10,
                            ge=1)
    # ---- inline evaluation
    eval_freq: int = option("epochs between sample grids and inline FID/IS, and after the last epoch "
                            "(0: never)", 0, ge=0)
    eval_num_samples: int = option("samples for inline FID/IS", 10000, ge=0)
    eval_batch_size: int | None = option("samples per generation batch and process", None, ge=1,
                                         default_text="batch_size")
    eval_grid_samples: int = option("samples in the logged image grid", 32, ge=0)
    eval_reference_data_path: str | None = option(
        "reference images for inline FID/IS: a folder of images (searched recursively) or an .npz with arr_0",
        None, default_text="<data_path>/eval_reference/<img_size> if that folder exists (the published layout), "
                           "else no inline FID/IS", path=True)
    eval_inception_weights: str | None = option("torch-fidelity Inception weights file; without it inline "
                                                "FID/IS is skipped", None,
                                                default_text="torch hub's checkpoints folder", path=True)
    samples_output_dir: str | None = option("folder for the inline evaluation's sample files", None,
                                            default_text="output_dir", path=True)
    keep_samples: int = option("non-zero: keep the inline evaluation's samples (all of them, as the published "
                               "code does) as samples_ep<epoch>_cfg<cfg>/rank<r>.npy", 0, ge=0)
    samples_only: bool = option("inline evaluation draws the samples but computes no FID/IS", False)
    cfg: list[float] = option("classifier-free guidance weight of inline samples; several values: FID/IS for "
                              "each (the grid uses the first)", [DEFAULT_CFG], ge=0, float32=True)
    cfg_start_step: int = option("first step that uses guidance", DEFAULT_CFG_START_STEP, ge=0)
    steps_per_scale: int = option("sampling steps per scale of inline samples", 4, ge=1)
    temperature: float = option("sampling temperature", 1.0, ge=0, float32=True)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_sources(cls, args_section: dict, overrides: dict | None = None, source: str = "config",
                     command_line: bool = False) -> "TrainConfig":
        """Defaults, then the `args:` section of `source`, then `overrides` (keyword arguments, or the
        options given on the command line)."""
        section = yaml_section(args_section, source, "args")
        if "config" in section.values:  # a config file naming another config file: refused
            raise ConfigError(f"{source}: unknown key 'args.config'")
        return make(cls, section, Layer(overrides or {}, None, "--" if command_line else "", from_text=command_line))

    @classmethod
    def load(cls, config_path=None, command_line: bool = False, **overrides) -> "TrainConfig":
        """From a config file (or, with `resume=`, the resumed folder's config.yaml) and overrides."""
        check_local_resume(overrides.get("resume"))
        if config_path is None and overrides.get("resume"):
            _, config_path = checkpoint_paths(overrides["resume"])
        if config_path is None:
            raise ValueError("no config: pass --config FILE (or --resume a run folder)")
        _, args_section = read_config(config_path)
        return cls.from_sources(args_section, {**overrides, "config": str(config_path)}, str(config_path),
                                command_line)

    def validate(self):
        check_local_resume(self.resume)
        if self.dist_on_itp:
            raise ConfigError("dist_on_itp: OpenMPI-launched runs are not supported here; launch with torchrun "
                              "(and leave dist_on_itp false)")
        if self.dist_url != "env://":
            raise ConfigError(f"dist_url must be env:// (torchrun's environment), got {self.dist_url!r}")
        if self.wandb_run_name and not self.wandb_project:
            raise ConfigError("wandb_run_name is given without wandb_project: pass --wandb_project too")
        if len(self.betas) != 2:
            raise ConfigError(f"betas must be two values, got {self.betas}")
        if not self.cfg:
            raise ConfigError("cfg needs at least one guidance value")
        if not self.resume and self.start_epoch >= self.epochs:
            raise ConfigError(f"start_epoch {self.start_epoch} must be < epochs {self.epochs} (a new run would train "
                              f"nothing)")
        self.check_outputs_outside_data()

    def check_outputs_outside_data(self):
        """No folder the run writes into lies in the folder its images are listed from, nor in a folder of
        reference images."""
        images = image_root(self.data_path, self.resolved_dataset())
        inputs = {"--data_path" if images == Path(self.data_path) else "the training images of --data_path": images}
        if self.eval_reference_data_path and os.path.isdir(self.eval_reference_data_path):
            inputs["--eval_reference_data_path"] = self.eval_reference_data_path
        outputs = {"--log_dir": self.log_dir, "--samples_output_dir": self.samples_output_dir}
        if self.output_dir or not self.resume:  # else the resumed folder, checked when it was made
            outputs["--output_dir" if self.output_dir else "--output_root"] = self.output_dir or self.output_root
        if self.create_cache:
            outputs["--cache_path" if self.cache_path else "--cached_path"] = self.cache_path or self.cached_path
        for option_name, folder in outputs.items():
            for data_option, data in inputs.items():
                if folder:
                    check_outside(folder, option_name, data, data_option)

    # ---- derived values ------------------------------------------------------------------------
    def resolved_lr(self, world_size: int) -> float:
        """lr, or blr x batch_size x processes / 256 when lr is not given (the published rule)."""
        if self.lr is not None:
            return self.lr
        return self.blr * self.batch_size * world_size / BLR_BATCH

    def resolved_dataset(self) -> str:
        return self.dataset or dataset_for_path(self.data_path)

    # ---- records -----------------------------------------------------------------------------
    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def namespace(self) -> argparse.Namespace:
        """The `args` entry of a published checkpoint."""
        return argparse.Namespace(**self.as_dict())

    def recipe(self) -> dict:
        """The `args:` section for an output folder's config.yaml."""
        return {k: v for k, v in self.as_dict().items() if k not in RUN_ONLY_KEYS}

    def model_section(self) -> tuple[dict, Path]:
        """(the `model:` section, the config file it is read from); a TrainConfig made directly may name none."""
        if not self.config:
            raise ValueError("no config: pass --config FILE (or --resume a run folder)")
        path = Path(self.config)
        return read_config(path)[0], path

    def resolved_output_dir(self) -> Path | None:
        """output_dir, else the resumed folder; None: a new folder under output_root is to be made."""
        if self.output_dir:
            return Path(self.output_dir)
        if self.resume:
            return checkpoint_paths(self.resume)[0].parent
        return None


def check_local_resume(resume):
    """A run resumes in its own folder: a Hub model is a start for a new run, not a run to continue."""
    if resume and is_hub_reference(resume):
        raise ConfigError(f"--resume {resume}: a Hugging Face Hub reference; --resume takes a local run folder or "
                          f"checkpoint (to start a new run from these weights: --weights_init {resume})")
