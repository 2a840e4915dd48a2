"""Sample a trained checkerboard generator: sample grids and figures, or 50k images for FID.

    python main_sample.py --checkpoint pretrained_models/checkerboard-L-2x --cfg 1.5 \
        --classes 207,360,387,974 --num_samples 8 --output_dir samples/look --save_fill
    torchrun --nproc_per_node=8 main_sample.py --checkpoint ... --fid --output_dir samples/fid

Writes `output_dir/samples.npz` (ADM layout: arr_0 uint8 (N, H, W, 3), arr_1 labels) and
`output_dir/grid.png`, plus the figures asked for. Sample i draws its label (with random
classes) and all its tokens from its own torch.Generator seeded with
`seed * 1_000_003 + i` (sampling.sample_io.sample_seed), so a seed gives the same samples whatever
the batch size and the number of processes. With --fid the labels are class-balanced by index:
sample i has class i % num_classes.

Work is cut into shards of --shard_size consecutive indices; process r of W draws shards
r, r+W, ... and writes each to `output_dir/shards/` atomically. A rerun with the same settings
skips the finished shards, so an interrupted run resumes without duplicates or gaps; process
0 then packs the shards in index order, checks the count (and, with --fid, the class balance)
and removes the shards.
"""
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from common.config import ArgumentParser, add_arguments, command_line, given_options, make, option, recheck
from models import CheckerboardGenerator, load_model
from models.sampler import Sampler
from sampling import figures as visualize, sample_io
from common.distributed import barrier, cleanup, get_rank, get_world_size, init_distributed, resolve_device
from common.files import atomic_write_text, leftover_temporaries

# The paper's guidance weights are 1.4-1.7; 1.5 is the run_evaluator.sh default too.
DEFAULT_CFG = 1.5
FID_NUM_SAMPLES = 50_000
DEFAULT_NUM_SAMPLES = 16


@dataclass
class SampleConfig:
    checkpoint: str = option("checkpoint file or model folder (published layout, with config.yaml)")
    output_dir: str = option("folder for samples.npz, grid.png, the figures and the resumable shards")
    use_ema: bool = option("sample with the checkpoint's model_ema weights", False)
    cfg: float | None = option("classifier-free guidance weight (0: none)", None, ge=0,
                               default_text=f"{DEFAULT_CFG} for a class-conditional model, else 0")
    cfg_start_step: int = option("first guided step, counted over all scales", 5, ge=0)
    steps_per_scale: int | list[int] = option("sampling steps per scale: one value, or one per scale such as "
                                              "1,4,4,4,4", 4, ge=1)
    temperature: float = option("sampling temperature (0: argmax)", 1.0, ge=0)
    seed: int = option("sample i draws from a generator seeded with seed*1000003+i", 0)
    classes: list[int] | None = option("comma-separated class ids, cycled over the samples", None, ge=0,
                                       default_text="random classes")
    random_classes: bool = option("a random class per sample (the default for a class-conditional model "
                                  "without --classes)", False)
    num_samples: int | None = option("how many samples", None, ge=1,
                                     default_text=f"{FID_NUM_SAMPLES} with --fid, one per --classes entry, else "
                                                  f"{DEFAULT_NUM_SAMPLES}")
    batch_size: int = option("samples per generate() call and process", 32, ge=1)
    fid: bool = option("FID mode: class-balanced labels (sample i has class i % num_classes), count checked; "
                       f"--num_samples {FID_NUM_SAMPLES} without labels asked for is FID mode too", False)
    shard_size: int = option("samples per resumable shard", 1000, ge=1)
    grid_samples: int = option("how many of the first samples grid.png shows", 64, ge=1)
    save_pyramid: bool = option("pyramid.png: the decoded image of every scale", False)
    save_fill: bool = option("checkerboard_fill.png: the cells sampled up to each step (paper Fig. 1)", False)
    save_step_maps: bool = option("step_entropy_maps.png: per-cell sampling step and entropy (paper Fig. 7)",
                                  False)
    save_entropy_plot: bool = option("entropy_per_step.png/.json: mean and quartiles of the entropy per step "
                                     "(paper Fig. 6)", False)
    vis_samples: int = option("how many of the first samples the figures show (drawn again with their trace)", 8,
                              ge=1)
    device: str | None = option("cuda, cuda:N or cpu", None, default_text="cuda when available")
    precision: str = option("fp32 (exact to the published numbers) or bf16 (faster on GPUs, logits within ~1% "
                            "of fp32)", "fp32", choices=("fp32", "bf16"))
    compile: bool = option("compiled sampling steps; on a GPU the whole generation becomes one CUDA graph per "
                           "batch shape", False)
    max_shards: int | None = option("stop after this many new shards per process (tests resumption)", None, ge=1,
                                    hidden=True)

    def __post_init__(self):
        # 50,000 samples with no labels asked for is the ADM protocol: an FID run, class-balanced.
        if self.num_samples == FID_NUM_SAMPLES and self.classes is None and not self.random_classes:
            self.fid = True


@dataclass
class SamplePlan:
    """A config checked against the model it samples."""

    num_samples: int
    cfg: float
    steps_per_scale: list[int]
    label_mode: str  # "balanced", "classes", "random" or "none" (unconditional)
    num_classes: int | None
    classes: list[int] | None = None

    def label_name(self) -> str | list[int]:
        return self.classes if self.label_mode == "classes" else self.label_mode


@dataclass
class SampleOutputs:
    samples_npz: Path
    grid_png: Path
    figures: dict = field(default_factory=dict)  # name -> path of each figure written


def check_config(config: SampleConfig) -> None:
    """Checks that need no model: every field's type bounds (for configs made in Python), then the
    combinations."""
    recheck(config)
    if config.classes is not None and config.random_classes:
        raise ValueError("--classes and --random_classes exclude each other")
    if config.fid and (config.classes is not None or config.random_classes):
        raise ValueError("--fid draws class-balanced labels; drop --classes/--random_classes")
    if config.classes is not None and not config.classes:
        raise ValueError("--classes is empty")


def plan_for(config: SampleConfig, model: CheckerboardGenerator) -> SamplePlan:
    """Checks that need the model: classes in range, guidance and classes only with a
    class-conditional model, one step count per scale, a class-balanced FID count."""
    check_config(config)
    mcfg = model.cfg
    try:
        steps = list(model.steps_per_scale_list(config.steps_per_scale))
    except ValueError as e:
        raise ValueError(f"--steps_per_scale: {e}") from None
    if not mcfg.class_cond:
        if config.cfg:
            raise ValueError(f"--cfg {config.cfg}: this model is unconditional, guidance needs a "
                             f"class-conditional model (use --cfg 0)")
        if config.classes is not None or config.random_classes:
            raise ValueError("this model is unconditional: drop --classes/--random_classes")
        num = config.num_samples or (FID_NUM_SAMPLES if config.fid else DEFAULT_NUM_SAMPLES)
        return SamplePlan(num, 0.0, steps, "none", None)

    n_cls = mcfg.num_classes
    cfg = DEFAULT_CFG if config.cfg is None else config.cfg
    if config.classes is not None:
        bad = [c for c in config.classes if not 0 <= c < n_cls]
        if bad:
            raise ValueError(f"--classes: class {bad[0]} is out of range, this model has classes 0..{n_cls - 1}")
        num = config.num_samples or len(config.classes)
        return SamplePlan(num, cfg, steps, "classes", n_cls, list(config.classes))
    if config.fid:
        num = config.num_samples or FID_NUM_SAMPLES
        if num % n_cls:
            raise ValueError(f"--num_samples {num} is not a multiple of the model's {n_cls} classes "
                             f"(--fid needs the same number of samples per class)")
        return SamplePlan(num, cfg, steps, "balanced", n_cls)
    return SamplePlan(config.num_samples or DEFAULT_NUM_SAMPLES, cfg, steps, "random", n_cls)


def batch_labels(plan: SamplePlan, indices: list[int], generators: list[torch.Generator]):
    if plan.label_mode == "balanced":
        return sample_io.balanced_labels(indices, plan.num_classes)
    if plan.label_mode == "classes":
        return sample_io.cycled_labels(indices, plan.classes)
    if plan.label_mode == "random":
        return sample_io.random_labels(generators, plan.num_classes)
    return None


def generate_indices(sampler: Sampler, config: SampleConfig, plan: SamplePlan, indices: list[int], device,
                     return_trace: bool = False):
    """The samples of these global indices, each from its own (seed, index) stream."""
    generators = sample_io.sample_generators(config.seed, indices, device)
    labels = batch_labels(plan, indices, generators)
    return sampler.generate(labels=None if labels is None else labels.to(device), batch_size=len(indices),
                            cfg=plan.cfg, cfg_start_step=config.cfg_start_step, steps_per_scale=plan.steps_per_scale,
                            temperature=config.temperature, generator=generators, return_trace=return_trace)


def load_for_sampling(config: SampleConfig, device) -> CheckerboardGenerator:
    model = load_model(config.checkpoint, use_ema=config.use_ema, device=device)
    return model.to(torch.bfloat16) if config.precision == "bf16" else model


def count_flops(model: CheckerboardGenerator, config: SampleConfig, device) -> int:
    """FLOPs of generating one sample with these settings (torch's counter: matmuls,
    attention and convolutions, the decoder included; guidance doubles the transformer rows)."""
    plan = plan_for(config, model)
    with FlopCounterMode(display=False) as counter:
        generate_indices(Sampler(model), config, plan, [0], device)
    return counter.get_total_flops()


def _plan_record(config: SampleConfig, plan: SamplePlan, device) -> dict:
    """What fixes the samples of a shard: a resumed run must match it."""
    return {"checkpoint": str(Path(config.checkpoint).resolve()), "use_ema": config.use_ema, "cfg": plan.cfg,
            "cfg_start_step": config.cfg_start_step, "steps_per_scale": plan.steps_per_scale,
            "temperature": config.temperature, "seed": config.seed, "labels": plan.label_name(),
            "num_samples": plan.num_samples, "shard_size": config.shard_size, "generator_device": device.type}


def _draw_shards(sampler: Sampler, config: SampleConfig, plan: SamplePlan, shard_dir: Path, ranges, device) -> bool:
    """Draws this process's missing shards; False if max_shards stopped it early."""
    rank, world = get_rank(), get_world_size()
    todo = [r for r in ranges[rank::world] if not sample_io.shard_path(shard_dir, *r).is_file()]
    finished = sum(hi - lo for lo, hi in ranges if sample_io.shard_path(shard_dir, lo, hi).is_file())
    # Process 0's progress times the number of processes: an estimate of the whole run.
    bar = tqdm(total=plan.num_samples, initial=finished, unit="img", desc="sampling", disable=rank != 0,
               dynamic_ncols=True)
    try:
        for n_done, (lo, hi) in enumerate(todo):
            if config.max_shards is not None and n_done >= config.max_shards:
                return False
            images, labels = [], []
            for start in range(lo, hi, config.batch_size):
                indices = list(range(start, min(start + config.batch_size, hi)))
                out = generate_indices(sampler, config, plan, indices, device)
                images.append(sample_io.to_uint8(out.images))
                if out.labels is not None:
                    labels.append(out.labels.cpu().numpy())
                bar.update(min(len(indices) * world, plan.num_samples - bar.n))
            sample_io.write_shard(shard_dir, lo, hi, np.concatenate(images), np.concatenate(labels) if labels else None)
    finally:
        bar.close()
    return True


def _trace(model, config: SampleConfig, plan: SamplePlan, device):
    """The first vis_samples samples again (same streams, same samples) with their step and
    entropy traces and their classes, concatenated over batches."""
    indices = list(range(min(config.vis_samples, plan.num_samples)))
    sampler = Sampler(model)  # eager: traces are for a few figures
    outs = [generate_indices(sampler, config, plan, indices[i:i + config.batch_size], device, return_trace=True)
            for i in range(0, len(indices), config.batch_size)]
    cat = lambda name: [torch.cat(parts) for parts in zip(*(getattr(o, name) for o in outs))]  # noqa: E731
    labels = torch.cat([o.labels for o in outs]).tolist() if plan.label_mode != "none" else None
    return torch.cat([o.images for o in outs]), cat("tokens"), cat("steps"), cat("entropy"), labels


def write_figures(model, config: SampleConfig, plan: SamplePlan, out_dir: Path, device) -> dict:
    wanted = config.save_pyramid or config.save_fill or config.save_step_maps or config.save_entropy_plot
    if not wanted:
        return {}
    images, tokens, steps, entropy, labels = _trace(model, config, plan, device)
    ae, size = model.autoencoder, model.cfg.img_size
    figures = {}
    if config.save_pyramid:
        figures["pyramid"] = out_dir / "pyramid.png"
        visualize.save_png(visualize.pyramid_figure(ae, tokens, size, labels), figures["pyramid"])
    if config.save_fill:
        figures["fill"] = out_dir / "checkerboard_fill.png"
        visualize.save_png(visualize.fill_figure(ae, tokens, steps, size, labels), figures["fill"])
    if config.save_step_maps:
        figures["step_maps"] = out_dir / "step_entropy_maps.png"
        visualize.save_png(visualize.step_entropy_figure(sample_io.to_uint8(images), steps, entropy, labels),
                           figures["step_maps"])
    if config.save_entropy_plot:
        stats = visualize.entropy_per_step(steps, entropy)
        figures["entropy_plot"] = out_dir / "entropy_per_step.png"
        figures["entropy_stats"] = out_dir / "entropy_per_step.json"
        visualize.save_png(visualize.entropy_plot(stats), figures["entropy_plot"])
        atomic_write_text(figures["entropy_stats"], json.dumps(stats.as_dict(), indent=1))
    return figures


def sample(config: SampleConfig, model: CheckerboardGenerator | None = None, device=None) -> SampleOutputs | None:
    """Draw config.num_samples samples (this process's share of them under torch.distributed)
    and, on process 0, pack and check samples.npz and write grid.png and the figures asked for.
    Returns the paths, or None when max_shards stopped the run before every shard was drawn."""
    check_config(config)
    device = torch.device(device) if device is not None else resolve_device(config.device)
    if model is None:
        model = load_for_sampling(config, device)
    plan = plan_for(config, model)
    out_dir = Path(config.output_dir)
    shard_dir = out_dir / "shards"
    record = _plan_record(config, plan, device)
    if get_rank() == 0:
        shard_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    sample_io.check_plan(shard_dir, record)
    barrier()
    if get_rank() == 0:
        sample_io.write_plan(shard_dir, record)
    ranges = sample_io.shard_ranges(plan.num_samples, config.shard_size)
    completed = _draw_shards(Sampler(model, compile=config.compile), config, plan, shard_dir, ranges, device)
    barrier()
    outputs = SampleOutputs(out_dir / "samples.npz", out_dir / "grid.png")
    if get_rank() != 0:
        return outputs
    if not completed and not all(sample_io.shard_path(shard_dir, *r).is_file() for r in ranges):
        return None

    sample_io.pack_shards(shard_dir, ranges, outputs.samples_npz, with_labels=plan.label_mode != "none")
    sample_io.check_samples(outputs.samples_npz, plan.num_samples,
                            plan.num_classes if plan.label_mode == "balanced" else None)
    for lo, hi in ranges:
        sample_io.shard_path(shard_dir, lo, hi).unlink()
    (shard_dir / sample_io.PLAN_NAME).unlink()
    # Every process has finished drawing: a temporary file still here is a killed run's part of a shard.
    for leftover in leftover_temporaries(shard_dir):
        leftover.unlink()
    shard_dir.rmdir()
    first = sample_io.read_first_images(outputs.samples_npz, config.grid_samples)
    visualize.save_png(visualize.image_grid(first), outputs.grid_png)
    outputs.figures = write_figures(model, config, plan, out_dir, device)
    return outputs


# ---------------------------------------------------------------- command line
PROG = "main_sample.py"


def get_args_parser() -> ArgumentParser:
    p = ArgumentParser(PROG, description=__doc__.split("\n\n")[0])
    add_arguments(p, SampleConfig)
    p.add_argument("--calculate_flops", action="store_true", help="print the GFLOPs of one sample and exit")
    return p


def main(argv=None) -> int:
    values = given_options(get_args_parser(), argv)
    calculate_flops = values.pop("calculate_flops", False)
    try:
        config = make(SampleConfig, command_line(values))
    except ValueError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    try:
        rank, _, device = init_distributed(config.device)
        if calculate_flops:
            model = load_for_sampling(config, device)
            flops = count_flops(model, config, device)
            print(f"GFLOPs per sample: {flops / 1e9:.3f}")
            return 0
        outputs = sample(config, device=device)
    except (ValueError, FileNotFoundError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    if outputs is None:
        print(f"stopped after --max_shards {config.max_shards}; rerun to resume")
    elif rank == 0:
        print(f"wrote {outputs.samples_npz} and {outputs.grid_png}")
        for path in outputs.figures.values():
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
