"""The training loop as plain functions: set-up, one optimizer step, one epoch, the whole run.

`train(config)` is what main.py runs: it starts the processes (the one place that does), then `setup`
(in order: the run folder claimed, the model, the data, the optimization, the resumed state, the
module train_step runs, the first writes; each built where its concern lives) and `fit`. A caller can
run `setup` + `fit` itself to inspect the model afterwards (with several processes, inside
`common.distributed.start_processes`); `train_step` is the per-iteration step on its own, for benchmarks.
Processes other than 0 write nothing; all of them seed their randomness from (seed, epoch, rank) at
every epoch start, which is what makes a resumed run repeat an uninterrupted one exactly.
"""
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from models.checkpoint_format import LAST
from common import distributed as dist_util
from common.distributed import Placement, placement, start_processes
from common.folders import check_is_folder
from common.lr_schedule import LRSchedule, set_lr
from models.generator import CheckerboardGenerator
from sampling.plan import plan_for
from training.checkpoint import (Resumed, kept_epoch, restore_state, run_config_text, save_training_checkpoint, training_state,
                                 write_run_config)
from training.config import TrainConfig
from training.data import Batch, CropSampler, epoch_seed
from training.ema import EMA
from training.inline_eval import InlineEvaluator, SampleSettings
from training.loader import build_data
from training.metrics_log import MetricsLog, start_wandb
from training.model import build_model, decoder_on
from training.optimization import StepOptions, build_optimization
from training.run_folder import RunFolder, claim_run_folder, new_run_dir
from training.token_cache import create_cache

log = logging.getLogger(__name__)

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
class GeneratorLoss(nn.Module):
    """The generator's training loss as a module forward: DDP synchronises gradients only for
    passes that go through its own forward."""

    def __init__(self, model: CheckerboardGenerator):
        super().__init__()
        self.model = model

    def forward(self, indices, labels):
        return self.model.loss(indices, labels)


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
    labels = batch.labels.to(device, non_blocking=True) if model.config.class_cond else None
    if isinstance(batch.inputs, torch.Tensor):
        with torch.no_grad():
            images = batch.inputs.to(device, non_blocking=True)
            return model.autoenc.encode_pyramid(images, model.scale_sizes), labels
    return [c.to(device, non_blocking=True).long() for c in batch.inputs], labels


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


def inline_reference(config: TrainConfig, img_size: int) -> str | None:
    """eval_reference_data_path, else the published layout's <data_path>/eval_reference/<img_size> when it
    exists; None: no inline FID/IS."""
    if config.eval_reference_data_path:
        return config.eval_reference_data_path
    published = Path(config.data_path) / "eval_reference" / str(img_size)
    return str(published) if published.is_dir() else None


def inline_evaluator(config: TrainConfig, model: CheckerboardGenerator, place: Placement) -> InlineEvaluator:
    """The samples and FID/IS of every eval_freq epochs, their settings checked against the model now,
    before the first epoch."""
    num_classes = model.config.num_classes if model.config.class_cond else None
    settings = SampleSettings(config.cfg[0], config.cfg_start_step, config.steps_per_scale, config.temperature,
                              config.seed, config.eval_batch_size or config.batch_size)
    if config.eval_freq:
        for cfg in config.cfg:
            plan_for(replace(settings, cfg=cfg).sample_config(num_classes), model)
    return InlineEvaluator(Path(config.output_dir), settings, config.eval_num_samples, config.eval_grid_samples,
                           inline_reference(config, model.config.img_size), config.eval_inception_weights, place.rank,
                           place.world, guidance=tuple(config.cfg), samples_dir=config.samples_output_dir,
                           keep_samples=bool(config.keep_samples), samples_only=config.samples_only)


def run_config(config: TrainConfig, world: int) -> TrainConfig:
    """`config` with this run's own values: its output folder (a new one under output_root unless one is
    named), its lr for `world` processes, and no weights_init when resuming (the published rule: --resume
    takes precedence). The folders it names to write into are checked to be folders."""
    for option_name in ("output_root", "log_dir", "samples_output_dir"):
        if getattr(config, option_name):
            check_is_folder(getattr(config, option_name), f"--{option_name}")
    output_dir = config.resolved_output_dir() or new_run_dir(config.output_root)
    lr = config.resolved_lr(world)
    if config.lr is None and dist_util.get_rank() == 0:
        log.info("lr %.3g = blr %.3g x batch_size %d x %d processes / 256", lr, config.blr, config.batch_size, world)
    if config.resume and config.weights_init and dist_util.get_rank() == 0:
        log.info("--resume takes precedence: weights_init %s is not used", config.weights_init)
    weights_init = None if config.resume else config.weights_init
    return replace(config, output_dir=str(output_dir), lr=lr, weights_init=weights_init)


def open_outputs(config: TrainConfig, model_section: dict, folder: RunFolder, resumed: Resumed | None,
                 start_epoch: int) -> MetricsLog:
    """The run's first writes, once everything is checked: the folder taken (see RunFolder.start_writing),
    config.yaml and args.yaml, the W&B run and the metrics log. A run with no epoch left to train (a
    finished run resumed) writes nothing of its own: not its config again, not an empty TensorBoard log or
    W&B run (fit says "nothing to do"); in its own folder it only completes what an interrupted save left
    undone."""
    writes = start_epoch < config.epochs
    wandb_run = _start_wandb(config, folder.folder) if writes else None
    if dist_util.get_rank() == 0 and (writes or folder.own):
        folder.start_writing(resumed)
        if writes:
            write_run_config(folder.folder, model_section, Path(config.config).parent, config.recipe(),
                             config.as_dict())
    dist_util.barrier()
    return MetricsLog(folder.folder, enabled=dist_util.get_rank() == 0 and writes, tensorboard_dir=config.log_dir,
                      wandb_run=wandb_run)


def setup(config: TrainConfig) -> TrainingRun:
    """Everything a run needs, checked before anything is written (bad input raises ValueError or
    OSError naming it), in the processes started (see `train`). Process 0 holds the run folder's lock
    until `TrainingRun.close`."""
    config.validate()
    place = placement(config.device)
    model_section, config_path = config.model_section()
    config = run_config(config, place.world)
    folder, resumed = claim_run_folder(config, run_config_text(model_section, config_path.parent, config.recipe()))
    try:
        model = build_model(config, model_section, resumed, place)
        sampler, loader = build_data(config, model, place)
        evaluator = inline_evaluator(config, model, place)
        opt = build_optimization(config, model, place.device)
        start_epoch = config.start_epoch if resumed is None else restore_state(resumed, opt)
        module = wrap_for_training(model, place.device, place.world > 1, config.compile)
        metrics = open_outputs(config, model_section, folder, resumed, start_epoch)
    except BaseException:
        folder.release()
        raise
    return TrainingRun(config, folder.folder, place.device, place.rank, place.world, model, module, opt.optimizer,
                       opt.scaler, opt.ema, opt.schedule, opt.step_options, sampler, loader, evaluator, metrics,
                       folder, start_epoch, None if resumed is None else start_epoch - 1)


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


def train(config: TrainConfig, on_start: Callable[[TrainingRun], None] | None = None) -> Path | None:
    """The whole run, in the processes torchrun launched (joined here, the one place, and parted after):
    the token cache first when `create_cache` asks for it (asked alone, without `use_cache`: returns None),
    then `setup` and `fit`; returns the output folder. `on_start(run)` is called once the run is set up
    (main.py's Ctrl-C line names its folder)."""
    with start_processes(config.device):
        if config.create_cache:
            log.info("token cache ready: %s", create_cache(config))
            if not config.use_cache:
                return None
        run = setup(config)
        try:
            if on_start is not None:
                on_start(run)
            return fit(run)
        finally:
            run.close()
