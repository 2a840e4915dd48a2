"""A sampling run: `sample(config)` draws config's samples into its folder (sampling/folder.py) and
writes samples.npz, grid.png and the figures asked for.

    outputs = sample(SampleConfig(checkpoint="pretrained_models/checkerboard-L-2x", output_dir="samples/fid",
                                  cfg=1.5, fid=True))
    model = load_for_sampling(config, device)       # several runs of one model: load it once
    for cfg in (1.25, 1.5, 2.0):
        sample(replace(config, cfg=cfg, output_dir=f"samples/cfg{cfg}"), model=model, device=device)

The work is cut into shards of config.shard_size consecutive indices; process r of W (under
torchrun) draws shards r, r+W, ... and writes each atomically, so an interrupted run leaves whole
shards only and the same call resumes it. Process 0 holds the folder's lock for the whole run and
packs the shards in index order into samples.npz, checked for its count (and, in FID mode, its class
balance). Calling it again for a finished run draws nothing.
"""
import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from common.content_hash import content_hash
from common.distributed import agree, barrier, get_rank, get_world_size, resolve_device
from common.files import atomic_write_text, run_lock
from models import CheckerboardGenerator, load_model
from models.checkpoint import checkpoint_paths
from models.sampler import Sampler
from sampling import figures, sample_io
from sampling.config import SampleConfig
from sampling.folder import SamplingFolder, run_record
from sampling.plan import SamplePlan, draw, draw_images, plan_for


@dataclass
class SampleOutputs:
    samples_npz: Path
    grid_png: Path
    figures: dict = field(default_factory=dict)  # name -> path of each figure asked for
    finished_before: bool = False  # the folder held this run's finished samples already: nothing was drawn


def load_for_sampling(config: SampleConfig, device) -> CheckerboardGenerator:
    if not config.checkpoint:
        raise ValueError("--checkpoint must be given")
    model = load_model(config.checkpoint, use_ema=config.use_ema, device=device)
    return model.to(torch.bfloat16) if config.precision == "bf16" else model


def sample(config: SampleConfig, model: CheckerboardGenerator | None = None, device=None,
           sampler: Sampler | None = None, checkpoint_sha256: str | None = None) -> SampleOutputs | None:
    """config's samples in config.output_dir (this process's share of them under torch.distributed).
    `model`: already loaded (config.checkpoint then only names it in sampling.json). `sampler`: instead
    of `model`, a Sampler of it that the caller keeps across runs (a sweep), so that its compiled steps
    and CUDA graphs, built once per batch shape, serve every run. `checkpoint_sha256`: the SHA-256 of
    config.checkpoint's file when the caller has it (a sweep hashes each model once), else it is
    computed; sampling.json records it. Every check (the config's own, when it was made; the model's,
    in plan_for; the folder's) comes before anything is written. Returns the paths, or None when
    max_shards stopped the run before every shard was drawn."""
    if sampler is not None:
        model = sampler.model
    if not config.output_dir:
        raise ValueError("--output_dir must be given")
    if device is not None:
        device = torch.device(device)
    else:
        device = model.device if model is not None else resolve_device(config.device)
    if config.checkpoint and checkpoint_sha256 is None and get_rank() == 0:
        # Before the weights are read: a file replaced meanwhile is then refused, not mixed in.
        checkpoint_sha256 = content_hash(checkpoint_paths(config.checkpoint)[0])
    if model is None:
        model = load_for_sampling(config, device)
    plan = plan_for(config, model)
    folder = SamplingFolder(Path(config.output_dir))
    outputs = SampleOutputs(folder.samples_npz, folder.grid_png, folder.figures(config))
    with ExitStack() as held:
        def start():  # process 0 holds the folder from here to the end of the run
            held.enter_context(run_lock(folder.path))
            folder.start(run_record(config, plan, device, checkpoint_sha256))

        agree(start)
        outputs.finished_before = all(p.exists() for p in folder.outputs(config))
        if outputs.finished_before:
            return outputs
        ranges = sample_io.shard_ranges(plan.num_samples, config.shard_size)
        if not folder.samples_npz.exists():
            sampler = sampler or Sampler(model, compile=config.compile)
            drawn = _draw_shards(sampler, config, plan, folder, ranges, device)
            barrier()
            if get_rank() != 0:
                return outputs
            if not drawn and not all(sample_io.shard_path(folder.shard_dir, *r).is_file() for r in ranges):
                return None
            sample_io.pack_shards(folder.shard_dir, ranges, folder.samples_npz, with_labels=plan.label_mode != "none")
        elif get_rank() != 0:
            return outputs
        sample_io.check_samples(folder.samples_npz, plan.num_samples,
                                plan.num_classes if plan.label_mode == "balanced" else None)
        folder.remove_shards(ranges)
        first = sample_io.read_first_images(folder.samples_npz, config.grid_samples)
        figures.save_png(figures.image_grid(first), folder.grid_png)
        write_figures(model, config, plan, outputs.figures, device)
    return outputs


def _draw_shards(sampler: Sampler, config: SampleConfig, plan: SamplePlan, folder: SamplingFolder, ranges,
                 device) -> bool:
    """Draws this process's missing shards; False if max_shards stopped it early."""
    rank, world = get_rank(), get_world_size()
    if rank == 0:
        folder.shard_dir.mkdir(exist_ok=True)
    barrier()
    done = lambda r: sample_io.shard_path(folder.shard_dir, *r).is_file()  # noqa: E731
    todo = [r for r in ranges[rank::world] if not done(r)]
    # Process 0's progress times the number of processes: an estimate of the whole run.
    bar = tqdm(total=plan.num_samples, initial=sum(hi - lo for lo, hi in ranges if done((lo, hi))), unit="img",
               desc="sampling", disable=rank != 0, dynamic_ncols=True)
    with bar:
        for n_done, (lo, hi) in enumerate(todo):
            if config.max_shards is not None and n_done >= config.max_shards:
                return False
            images, labels = draw_images(sampler, plan, list(range(lo, hi)), config.batch_size, device,
                                         progress=lambda k: bar.update(min(k * world, plan.num_samples - bar.n)))
            sample_io.write_shard(folder.shard_dir, lo, hi, images, labels)
    return True


# ---------------------------------------------------------------- figures
def write_figures(model: CheckerboardGenerator, config: SampleConfig, plan: SamplePlan, paths: dict, device) -> None:
    """The figures of `paths` (name -> path), from the first vis_samples samples drawn again with
    their step and entropy traces (the same streams give the same samples)."""
    if not paths:
        return
    images, tokens, steps, entropy, labels = _trace(model, config, plan, device)
    ae, size = model.autoencoder, model.config.img_size
    if "pyramid" in paths:
        figures.save_png(figures.pyramid_figure(ae, tokens, size, labels), paths["pyramid"])
    if "fill" in paths:
        figures.save_png(figures.fill_figure(ae, tokens, steps, size, labels), paths["fill"])
    if "step_maps" in paths:
        figures.save_png(figures.step_entropy_figure(sample_io.to_uint8(images), steps, entropy, labels),
                         paths["step_maps"])
    if "entropy_plot" in paths:
        stats = figures.entropy_per_step(steps, entropy)
        figures.save_png(figures.entropy_plot(stats), paths["entropy_plot"])
        atomic_write_text(paths["entropy_stats"], json.dumps(stats.as_dict(), indent=1))


def _trace(model, config: SampleConfig, plan: SamplePlan, device):
    """Images, tokens, steps and entropies (per scale) and classes of the first vis_samples samples."""
    indices = list(range(min(config.vis_samples, plan.num_samples)))
    sampler = Sampler(model)  # eager: traces are for a few figures
    outs = [draw(sampler, plan, indices[i:i + config.batch_size], device, return_trace=True)
            for i in range(0, len(indices), config.batch_size)]
    per_scale = lambda name: [torch.cat(parts) for parts in zip(*(getattr(o, name) for o in outs))]  # noqa: E731
    labels = torch.cat([o.labels for o in outs]).tolist() if plan.label_mode != "none" else None
    return torch.cat([o.images for o in outs]), per_scale("tokens"), per_scale("steps"), per_scale("entropy"), labels
