"""The training loop as plain functions: set-up, one optimizer step, one epoch, the whole run.

`train(config)` is what main.py runs; `setup` + `fit` are the same in two parts (a caller can inspect
the model afterwards), and `train_step` is the per-iteration step on its own, for benchmarks.
Processes other than 0 write nothing; all of them seed their randomness from (seed, epoch, rank) at
every epoch start, which is what makes a resumed run repeat an uninterrupted one exactly.
"""
import logging
import math
import os
import time
from datetime import datetime
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import BatchSampler, DataLoader
from tqdm.auto import tqdm

from models.checkpoint import build_generator, checkpoint_paths
from models.checkpoint_format import LAST, load_state_dict_strict, read_config
from models.generator import CheckerboardGenerator
from common import distributed as dist_util
from common.folders import check_is_folder
from training.checkpoint import (init_weights_from, kept_epoch, load_training_checkpoint, run_config_text,
                                 save_training_checkpoint, training_state, write_run_config)
from training.data import NUM_CROPS, Batch, CropSampler, TenCropImageFolder, collate_skipping, epoch_seed, image_root
from training.ema import EMA
from training.inline_eval import InlineEvaluator, SampleSettings
from common.lr_schedule import LRSchedule, set_lr
from training.metrics_log import MetricsLog, start_wandb
from sampling.plan import plan_for
from training.token_cache import TokenCacheDataset, cache_spec, create_token_cache, default_cache_dir
from training.config import TrainConfig
from training.run_folder import (RunFolder, check_new_run_folder, check_resume_point, is_own_folder, remove_leftovers,
                                 restore_kept_checkpoint)

log = logging.getLogger(__name__)

# Autoencoder parts by use: training reads only the codebook (`quantize`); encoding images needs these
ENCODER_PARTS = ("encoder", "quant_conv")
DECODER_PARTS = ("decoder", "post_quant_conv")
# Stream of epoch_seed(seed, epoch, rank, stream) seeding torch's generators: label drop, random
# replacement and the block splits of training all draw from them, on the device.
SEED_TORCH = 1
SKIPPED_NAMES_SHOWN = 3


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (or gradient norm); nothing was saved after it."""


class NoTrainingStepError(RuntimeError):
    """An epoch made no optimizer step (every image of it failed to decode); nothing was saved after it."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. a full disk); the ones written before are whole."""


# ---- one step -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepOptions:
    accum_iter: int = 1
    grad_clip: float | None = None  # None or 0: no clipping (the norm is still returned)
    amp_dtype: torch.dtype | None = None  # autocast dtype; None: full precision
    compile: bool = False  # applied by wrap_for_training


class GeneratorLoss(nn.Module):
    """The generator's training loss as a module forward: DDP synchronises gradients only for
    passes that go through its own forward."""

    def __init__(self, model: CheckerboardGenerator):
        super().__init__()
        self.model = model

    def forward(self, indices, labels):
        return self.model.loss(indices, labels)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on >= 2-D weights only; biases and 1-D parameters (norms, empty tokens) get none."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas, device,
                    kind: str = "adamw") -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or Adam (weight decay added to the gradient), as the published code."""
    optimizer = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[kind]
    return optimizer(param_groups(model, weight_decay), lr=lr, betas=tuple(betas),
                     fused=torch.device(device).type == "cuda")


def amp_dtype_for(precision: str, device) -> torch.dtype | None:
    """Autocast only on GPUs; the CPU trains in fp32."""
    if torch.device(device).type != "cuda" or precision == "fp32":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def wrap_for_training(model: CheckerboardGenerator, device, distributed: bool, use_compile: bool = False) -> nn.Module:
    """The module train_step runs: the loss module, under DDP when distributed, compiled if asked."""
    module = GeneratorLoss(model)
    if distributed:
        # The frozen autoencoder is identical everywhere and partly kept on the CPU: DDP leaves it alone.
        frozen = [n for n, _ in module.named_parameters() if n.startswith("model.autoenc.")]
        frozen += [n for n, _ in module.named_buffers() if n.startswith("model.autoenc.")]
        DDP._set_params_and_buffers_to_ignore_for_model(module, frozen)
        device = torch.device(device)
        module = DDP(module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    return torch.compile(module) if use_compile else module


def _ddp_of(module):
    module = getattr(module, "_orig_mod", module)
    return module if isinstance(module, DDP) else None


def train_step(model: nn.Module, batch, optimizer, scaler, options: StepOptions, accumulate: bool = False) -> dict:
    """Forward and backward of one batch `(indices, labels)`; unless `accumulate`, also unscale, clip,
    step the optimizer and clear the gradients. Returns the loss statistics and, after a step,
    `grad_norm`, as device tensors (no host sync). The loss is divided by `options.accum_iter`."""
    indices, labels = batch
    ddp = _ddp_of(model)
    sync = ddp.no_sync() if accumulate and ddp is not None else nullcontext()
    with sync:
        amp = nullcontext() if options.amp_dtype is None else torch.autocast(indices[0].device.type,
                                                                            dtype=options.amp_dtype)
        with amp:
            loss, stats = model(indices, labels)
        scaler.scale(loss / options.accum_iter).backward()
    stats = {k: v.detach() for k, v in stats.items()}
    if accumulate:
        return stats
    scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, options.grad_clip or math.inf)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return stats


def batch_tokens(batch: Batch, model: CheckerboardGenerator, device) -> tuple:
    """(per-scale code indices [(B, s, s) int64], labels or None) on `device`; images are encoded."""
    labels = batch.labels.to(device, non_blocking=True) if model.cfg.class_cond else None
    if isinstance(batch.inputs, torch.Tensor):
        with torch.no_grad():
            images = batch.inputs.to(device, non_blocking=True)
            return model.autoenc.encode_pyramid(images, model.scale_sizes), labels
    return [c.to(device, non_blocking=True).long() for c in batch.inputs], labels


# ---- placement ----------------------------------------------------------------------------------
def start_processes(device_name: str | None) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether this call started the process group)."""
    device = dist_util.resolve_device(device_name)
    if dist_util.is_distributed():
        rank, world = dist_util.get_rank(), dist_util.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        return rank, world, device, False
    rank, world, device = dist_util.init_distributed(device.type)
    return rank, world, device, dist_util.is_distributed()


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


# ---- the run --------------------------------------------------------------------------------------
@dataclass
class TrainingRun:
    config: TrainConfig
    output_dir: Path
    device: torch.device
    rank: int
    world_size: int
    model: CheckerboardGenerator
    module: nn.Module  # what train_step runs (loss module, DDP, compiled)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: EMA | None
    schedule: LRSchedule
    step_options: StepOptions
    sampler: CropSampler
    loader: DataLoader
    evaluator: InlineEvaluator
    metrics: MetricsLog
    folder: RunFolder  # process 0 holds its lock
    start_epoch: int = 0
    last_saved_epoch: int | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self):
        try:
            self.metrics.close()
        finally:
            self.folder.release()


def _config_file(config: TrainConfig) -> Path:
    if not config.config:
        raise ValueError("no config: pass --config FILE (or --resume a run folder)")
    return Path(config.config)


def _check_data_path(config: TrainConfig):
    if not Path(config.data_path).exists():
        raise FileNotFoundError(f"data path not found: {config.data_path}")
    if not Path(config.data_path).is_dir():
        raise ValueError(f"--data_path {config.data_path} is a file, not a folder")


def _cache_dir(config: TrainConfig, spec) -> Path:
    if config.cache_path:
        return Path(config.cache_path)
    return default_cache_dir(config.cached_path, config.data_path, spec)


def create_cache(config: TrainConfig) -> Path:
    """Encode the training images into the token cache (or finish an interrupted one); returns its folder."""
    rank, world, device, owns = start_processes(config.device)
    try:
        _check_data_path(config)
        config_path = _config_file(config)
        model_section, _ = read_config(config_path)
        model = build_generator(model_section, config_path.parent, source=str(config_path))
        model.autoenc.to(device)
        spec = cache_spec(model)
        dataset = config.resolved_dataset()
        return create_token_cache(model, image_root(config.data_path, dataset), _cache_dir(config, spec),
                                  config.cache_shard_size, config.cache_batch_size, config.num_workers, device, rank,
                                  world, progress=config.progress, dataset_kind=dataset)
    finally:
        if owns:
            dist_util.cleanup()


def new_run_dir(output_root) -> Path:
    """<output_root>/<yymmdd-HHMM>-<8 hex digits> (the published run id), drawn by process 0 and shared;
    never an existing folder."""
    path = None
    if dist_util.get_rank() == 0:
        while path is None or path.exists():
            path = Path(output_root) / f"{datetime.now():%y%m%d-%H%M}-{os.urandom(4).hex()}"
    return Path(dist_util.broadcast_object(str(path) if path else None))


def inline_reference(config: TrainConfig, img_size: int) -> str | None:
    """eval_reference_data_path, else the published layout's <data_path>/eval_reference/<img_size> when it
    exists; None: no inline FID/IS."""
    if config.eval_reference_data_path:
        return config.eval_reference_data_path
    published = Path(config.data_path) / "eval_reference" / str(img_size)
    return str(published) if published.is_dir() else None


def setup(config: TrainConfig) -> TrainingRun:
    """Everything a run needs, checked before anything is written (bad input raises ValueError or
    OSError naming it). Process 0 holds the run folder's lock until `TrainingRun.close`."""
    config.validate()
    rank, world, device, _ = start_processes(config.device)
    config_path = _config_file(config)
    model_section, _ = read_config(config_path)
    for option_name in ("output_root", "log_dir", "samples_output_dir"):
        if getattr(config, option_name):
            check_is_folder(getattr(config, option_name), f"--{option_name}")
    resume_path = checkpoint_paths(config.resume)[0] if config.resume else None
    output_dir = config.resolved_output_dir() or new_run_dir(config.output_root)
    own_folder = resume_path is not None and is_own_folder(output_dir, resume_path)
    lr = config.resolved_lr(world)
    if config.lr is None and rank == 0:
        log.info("lr %.3g = blr %.3g x batch_size %d x %d processes / 256", lr, config.blr, config.batch_size, world)
    config = replace(config, output_dir=str(output_dir), lr=lr)
    config_text = run_config_text(model_section, config_path.parent, config.recipe())
    if not own_folder:
        check_new_run_folder(output_dir, config_text)
    folder = RunFolder(output_dir)
    try:
        if own_folder and rank == 0:
            folder.lock()  # before reading the checkpoint: another resume of this folder may be writing it
        return _setup(config, rank, world, device, config_path, model_section, config_text, own_folder, folder)
    except BaseException:
        folder.release()
        raise


def _setup(config: TrainConfig, rank: int, world: int, device, config_path: Path, model_section: dict,
           config_text: str, own_folder: bool, folder: RunFolder) -> TrainingRun:
    output_dir = folder.folder
    ckpt = None
    if config.resume:
        ckpt, ckpt_path = load_training_checkpoint(config.resume, resume=True)
        if own_folder:
            check_resume_point(output_dir, ckpt_path, ckpt["epoch"])
        if config.weights_init and rank == 0:
            log.info("--resume takes precedence: weights_init %s is not used", config.weights_init)
        config = replace(config, weights_init=None)
    torch.manual_seed(config.seed)  # the initial weights
    model = build_generator(model_section, config_path.parent, source=str(config_path),
                            load_autoencoder_weights=not (config.resume or config.weights_init))
    if config.weights_init:
        init, init_path = load_training_checkpoint(config.weights_init)
        remapped = init_weights_from(model, init["model"], init_path)
        if remapped and rank == 0:
            log.info("weights_init %s: %s copied for the scales both models have", init_path, ", ".join(remapped))
    if ckpt is not None:
        load_state_dict_strict(model, ckpt["model"], str(ckpt_path))

    num_classes = model.cfg.num_classes if model.cfg.class_cond else None
    if config.use_cache:
        spec = cache_spec(model)
        if not config.cache_path:
            _check_data_path(config)
        dataset = TokenCacheDataset(_cache_dir(config, spec), spec, num_classes)
    else:
        _check_data_path(config)
        kind = config.resolved_dataset()
        dataset = TenCropImageFolder(image_root(config.data_path, kind), model.cfg.img_size, num_classes, kind)
        dataset.check_decodable()
    # Of the ten crops the first five are unmirrored (training/data.py), so five means "no mirroring".
    sampler = CropSampler(len(dataset), NUM_CROPS if config.mirrored_crops else NUM_CROPS // 2, config.seed, rank,
                          world)
    loader = DataLoader(dataset, batch_sampler=BatchSampler(sampler, config.batch_size, drop_last=True),
                        num_workers=config.num_workers, pin_memory=config.pin_mem and device.type == "cuda",
                        collate_fn=collate_skipping)
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} training images give no full batch of {config.batch_size} per process "
                         f"({world} processes): lower --batch_size")
    settings = SampleSettings(config.cfg[0], config.cfg_start_step, config.steps_per_scale, config.temperature,
                              config.seed, config.eval_batch_size or config.batch_size)
    if config.eval_freq:  # the inline samples' settings against the model, before the first epoch
        for cfg in config.cfg:
            plan_for(replace(settings, cfg=cfg).sample_config(num_classes), model)
    evaluator = InlineEvaluator(output_dir, settings, config.eval_num_samples, config.eval_grid_samples,
                                inline_reference(config, model.cfg.img_size), config.eval_inception_weights, rank,
                                world, guidance=tuple(config.cfg), samples_dir=config.samples_output_dir,
                                keep_samples=bool(config.keep_samples), samples_only=config.samples_only)

    place_model(model, device, encoder_on_device=not config.use_cache)
    model.train()
    model.transformer.grad_checkpointing = config.grad_checkpointing
    ema = EMA(model, config.ema_rate) if config.ema else None
    optimizer = build_optimizer(model, config.lr, config.weight_decay, config.betas, device, config.optimizer)
    amp_dtype = amp_dtype_for(config.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    start_epoch = config.start_epoch
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise ValueError(f"{ckpt_path}: its optimizer state does not fit this run's optimizer ({e})") from None
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            if ckpt.get("model_ema") is not None:
                ema.load_state_dict(ckpt["model_ema"], f"{ckpt_path}: model_ema")
            else:
                log.warning("%s has no model_ema: the EMA restarts from the current weights", ckpt_path)
        start_epoch = ckpt["epoch"] + 1
    options = StepOptions(config.grad_accum_steps, config.clip_grad, amp_dtype, config.compile)
    module = wrap_for_training(model, device, world > 1, options.compile)
    schedule = LRSchedule.of(config)

    # A run with no epoch left to train (a finished run resumed) writes nothing of its own: not its config
    # again, not an empty TensorBoard log or W&B run (fit says "nothing to do"); in its own folder it only
    # completes what an interrupted save left undone.
    writes = start_epoch < config.epochs
    wandb_run = _start_wandb(config, output_dir) if writes else None
    if rank == 0 and (writes or own_folder):
        # The first write. A new folder is claimed now, and checked again under its lock: another run may
        # have started there since the first check.
        folder.lock()
        if not own_folder:
            check_new_run_folder(output_dir, config_text)
        remove_leftovers(output_dir)
        if ckpt is not None and own_folder and os.path.samefile(ckpt_path, output_dir / LAST):
            restore_kept_checkpoint(output_dir, ckpt)
        if writes:
            write_run_config(output_dir, model_section, config_path.parent, config.recipe(), config.as_dict())
    dist_util.barrier()
    metrics = MetricsLog(output_dir, enabled=rank == 0 and writes, tensorboard_dir=config.log_dir,
                         wandb_run=wandb_run)
    return TrainingRun(config, output_dir, device, rank, world, model, module, optimizer, scaler, ema, schedule,
                       options, sampler, loader, evaluator, metrics, folder, start_epoch,
                       start_epoch - 1 if ckpt is not None else None)


def _start_wandb(config: TrainConfig, output_dir: Path):
    """Process 0's W&B run (None elsewhere, or without wandb_project); started after every check, and its
    failure stops every process."""
    if not config.wandb_project:
        return None
    started = []
    dist_util.agree(lambda: started.append(start_wandb(config.wandb_project, config.wandb_run_name,
                                                       config.as_dict(), output_dir)))
    return started[0] if started else None


class RunningMeans:
    """Sums of device scalars between host syncs."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def add(self, stats: dict):
        for key, value in stats.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def reduce(self) -> dict:
        """Means over the window and over processes (one host sync); the window starts again."""
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        means = dist_util.all_reduce_mean(torch.stack([self.sums[k] / self.counts[k] for k in keys]))
        self.sums, self.counts = {}, {}
        return dict(zip(keys, means.tolist()))


def seed_epoch(run: TrainingRun, epoch: int):
    torch.manual_seed(epoch_seed(run.config.seed, epoch, run.rank, SEED_TORCH))


def _check_finite(run: TrainingRun, values: dict, epoch: int, first: int, last: int):
    bad = {k: values[k] for k in ("loss_total", "grad_norm") if k in values and not math.isfinite(values[k])}
    # With fp16 the scaler skips steps whose gradients overflow; that is not a failure.
    if run.scaler.is_enabled():
        bad.pop("grad_norm", None)
    if bad:
        raise NonFiniteLossError(f"non-finite {', '.join(f'{k} {v}' for k, v in bad.items())} in epoch {epoch}, "
                                 f"iterations {first + 1}-{last + 1}: training stopped; {_kept(run)}")


def _kept(run: TrainingRun) -> str:
    """What a run stopped now leaves of its training state."""
    if run.last_saved_epoch is None:
        return "no checkpoint was written"
    return f"{run.output_dir / LAST} (epoch {run.last_saved_epoch}) was left as it was"


def train_one_epoch(run: TrainingRun, epoch: int) -> dict:
    """One pass over the images (one crop each); returns the epoch's mean statistics."""
    config, model = run.config, run.model
    seed_epoch(run, epoch)
    run.sampler.set_epoch(epoch)
    run.module.train()
    n_iters = len(run.loader)
    window, totals = RunningMeans(), RunningMeans()
    window_start, window_time = 0, time.perf_counter()
    skipped, trained = [], 0  # trained: batches with at least one decoded image
    bar = tqdm(total=n_iters, desc=f"epoch {epoch} of {config.epochs}", unit="it", dynamic_ncols=True,
               disable=not (config.progress and run.is_main))
    for it, batch in enumerate(run.loader):
        skipped += batch.skipped
        last_micro = (it + 1) % config.grad_accum_steps == 0 or it + 1 == n_iters
        # A batch whose images all failed to decode is skipped (with several processes the others
        # would wait for this one: a risk only for batches of a few images from a damaged folder).
        if batch.labels is not None:
            if last_micro:
                set_lr(run.optimizer, run.schedule(epoch + it / n_iters))
            stats = train_step(run.module, batch_tokens(batch, model, run.device), run.optimizer, run.scaler,
                               run.step_options, accumulate=not last_micro)
            if last_micro and run.ema is not None:
                run.ema.update()
            trained += 1
            window.add(stats)
            totals.add(stats)
        bar.update(1)
        if (it + 1) % config.log_freq == 0 or it + 1 == n_iters:
            values = window.reduce()
            now = time.perf_counter()
            _check_finite(run, values, epoch, window_start, it)
            values["lr"] = run.optimizer.param_groups[0]["lr"]
            values["images_per_s"] = (it + 1 - window_start) * config.batch_size * run.world_size / (now - window_time)
            step = epoch * n_iters + it + 1
            run.metrics.scalars(values, step)
            run.metrics.record({"epoch": epoch, "iteration": it + 1, "step": step, **values})
            bar.set_postfix(loss=f"{values.get('loss_total', float('nan')):.4f}", lr=f"{values['lr']:.2e}")
            window_start, window_time = it + 1, now
    bar.close()
    summary = totals.reduce()
    _report_skipped(run, skipped, epoch)
    _check_trained(run, trained, skipped, epoch)
    return summary


def _check_trained(run: TrainingRun, trained: int, skipped: list, epoch: int):
    """An epoch that trained on nothing (every image undecodable) is a failure, not an epoch to save."""
    total = round(dist_util.all_reduce_mean(torch.tensor(float(trained), device=run.device)).item() * run.world_size)
    if total == 0:
        example = f" (e.g. {skipped[0]})" if skipped else ""
        raise NoTrainingStepError(f"epoch {epoch} trained on nothing: every image failed to decode{example}; "
                                  f"{_kept(run)}")


def _report_skipped(run: TrainingRun, skipped: list, epoch: int):
    mean = dist_util.all_reduce_mean(torch.tensor(float(len(skipped)), device=run.device)).item()
    count = round(mean * run.world_size)
    if count and run.is_main:
        shown = ", ".join(skipped[:SKIPPED_NAMES_SHOWN])
        log.warning("epoch %d: skipped %d undecodable images (e.g. %s)", epoch, count, shown)
        run.metrics.record({"epoch": epoch, "skipped_images": count, "examples": skipped[:SKIPPED_NAMES_SHOWN]})


def save(run: TrainingRun, epoch: int):
    """checkpoint-last.pth every save_last_freq epochs, and a kept checkpoint-<epoch>.pth every save_freq
    epochs; both after the last epoch."""
    config = run.config
    keep = kept_epoch(epoch, config.epochs, config.save_freq)
    if not (keep or (epoch + 1) % config.save_last_freq == 0):
        return
    if run.is_main:
        ema_state = run.ema.state_dict(run.model) if run.ema is not None else None
        state = training_state(run.model.state_dict(), ema_state, run.optimizer, run.scaler, epoch, config.namespace())
        try:
            save_training_checkpoint(run.output_dir, state, keep)
        except OSError as e:  # a full disk, a lost mount: the files written before are whole (atomic writes)
            raise CheckpointWriteError(f"writing the epoch {epoch} checkpoint {e.filename or run.output_dir} failed "
                                       f"({e.strerror or e}); {_kept(run)}") from None
    dist_util.barrier()
    run.last_saved_epoch = epoch


def evaluate(run: TrainingRun, epoch: int) -> dict:
    """Sample grid and inline FID/IS with the EMA weights when there are some."""
    model = run.model
    model.eval()
    try:
        with (run.ema.applied() if run.ema is not None else nullcontext()), decoder_on(model, run.device):
            metrics, grid = run.evaluator(model, epoch, run.device)
    finally:
        model.train()
    step = (epoch + 1) * len(run.loader)
    if grid is not None:
        run.metrics.image("samples", grid, step)
    if metrics:
        run.metrics.scalars(metrics, step, prefix="eval")
        run.metrics.record({"epoch": epoch, **metrics})
        if run.is_main:
            log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return metrics


def fit(run: TrainingRun) -> Path:
    config = run.config
    n_iters = len(run.loader)
    if run.is_main:
        source = "token cache (ten crops cached per image)" if config.use_cache else "images (ten-crop augmentation)"
        log.info("an epoch is one pass over the %d images, one random crop of each, not ten passes: %d iterations "
                 "of %d x %d processes from the %s; effective batch %d", len(run.loader.dataset), n_iters,
                 config.batch_size, run.world_size, source,
                 config.batch_size * config.grad_accum_steps * run.world_size)
        if run.start_epoch >= config.epochs:
            log.info("nothing to do: epochs %d already done (raise --epochs to continue)", run.start_epoch)
        elif run.last_saved_epoch is not None:
            log.info("resuming at epoch %d of %d (epochs count from 0)", run.start_epoch, config.epochs)
        elif run.start_epoch:
            log.info("starting at epoch %d of %d (--start_epoch)", run.start_epoch, config.epochs)
    for epoch in range(run.start_epoch, config.epochs):
        summary = train_one_epoch(run, epoch)
        if run.is_main:  # before the save: a save that fails (a full disk) comes after the epoch's result
            log.info("epoch %d: loss %.4f", epoch, summary.get("loss_total", float("nan")))
            run.metrics.record({"epoch": epoch, "epoch_mean": summary})
            run.metrics.flush()
        save(run, epoch)
        if config.eval_freq and ((epoch + 1) % config.eval_freq == 0 or epoch + 1 == config.epochs):
            evaluate(run, epoch)
    return run.output_dir


def prepare(config: TrainConfig) -> TrainingRun | None:
    """`setup(config)`, after making (or finishing) the token cache when `create_cache` asks for it;
    None when it asks for the cache alone (no `use_cache`)."""
    if config.create_cache:
        log.info("token cache ready: %s", create_cache(config))
        if not config.use_cache:
            return None
    return setup(config)


def train(config: TrainConfig) -> Path | None:
    """The whole run (see `prepare` for the token cache). Returns the output folder, or None when only
    the token cache was asked for."""
    _, _, _, owns = start_processes(config.device)
    run = None
    try:
        run = prepare(config)
        return None if run is None else fit(run)
    finally:
        if run is not None:
            run.close()
        if owns:
            dist_util.cleanup()
