"""A guidance sweep: `run_sweep(config)` samples and evaluates every point of config's grid into its
folder (sweep/folder.py), with a row per point and the tables and plots rewritten after each.

    outputs = run_sweep(SweepConfig(checkpoint=["pretrained_models/checkerboard-L-2x"], cfg=["1.0:2.0:0.1"],
                                    steps_per_scale=["4"], reference="VIRTUAL_imagenet256_labeled.npz",
                                    output_dir="sweeps/l2x", confirm=50000))

The search: every model x steps-per-scale setting x guidance weight, config.num_samples
class-balanced samples each (sampling/run.py's FID mode, so a point's samples are resumable and
seeded per sample: every point draws sample i from the same stream, and a finished point is not
drawn again). Each point is evaluated against the reference, whose statistics are computed once and
cached beside the sweep by its content (evaluation/reference.py). Then, with config.confirm, each
setting's best guidance (lowest FID of its search rows) is drawn again with config.confirm samples
and evaluated: the Table 1 numbers.

An interrupted sweep continues where it stopped: points with a row are skipped, a point sampled but
not evaluated is evaluated, a point partly sampled resumes its shards. Every check (each point
against its model, the reference, the folder) comes before anything is written.

Under torch.distributed every process draws its share of each point; process 0 holds the folder,
evaluates and writes the rows, the others wait for it at a barrier.
"""
import gc
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch
# TensorFlow (the Inception network) loaded before torch._dynamo makes the later import of torch._dynamo
# (building a model on the meta device does it) crash the process (torch 2.14, TensorFlow 2.x): a
# sweep loads both, in an order its caller may choose, so dynamo comes first, here.
import torch._dynamo  # noqa: E402, F401

from common.distributed import agree, get_rank, resolve_device
from common.files import run_lock
from evaluation import evaluate_samples, load_features, metric_key, open_batch, reference_statistics
from common.content_hash import content_hash
from models.sampler import Sampler
from sampling.run import load_for_sampling, sample
from sweep import report
from sweep import results as sr
from sweep.config import SweepConfig
from sweep.folder import SweepFolder
from sweep.points import Point, inspect_checkpoint, make_point


@dataclass
class SweepOutputs:
    folder: Path
    rows: list = field(default_factory=list)  # every row of results.json (on process 0; [] on the others)
    evaluated: list = field(default_factory=list)  # the points this call evaluated
    skipped: list = field(default_factory=list)  # the points evaluated before
    stopped: bool = False  # config.max_points ended the call before the grid was done


def _unique(items, key) -> list:
    """The items in order, each first one of its key only."""
    first = {}
    for item in items:
        first.setdefault(key(item), item)
    return list(first.values())


def run_sweep(config: SweepConfig, device=None, network=None, log=print) -> SweepOutputs:
    """config's sweep into config.output_dir. `network`: the feature network, already loaded (config.features
    then only names it). `log(line)`: one line per point, on process 0."""
    config.validate()
    config.check_paths()
    device = torch.device(device) if device is not None else resolve_device(config.device)
    log = log if get_rank() == 0 else (lambda *_: None)
    models = _unique([inspect_checkpoint(c, config.use_ema) for c in config.checkpoint], lambda m: m.path)
    cfgs, steps_settings = config.cfg_values(), config.steps_settings()
    for m in models:  # every point checked against its model before anything is written
        for steps in steps_settings:
            for n in (config.num_samples, config.confirm or config.num_samples):
                make_point(config, m, m.given, "", steps, cfgs[-1], n)  # the largest: guided if any is
    folder = SweepFolder(config.output_dir)
    out = SweepOutputs(folder.path)
    state = {}

    with ExitStack() as held:
        def start():  # process 0 holds the folder from here to the end of the sweep
            net = network if network is not None else load_features(config.features, config.inception_graph)
            reference = open_batch(config.reference)
            for m in models:
                size = (m.meta.config.img_size, m.meta.config.img_size)
                net.check_image_shape(size)
                if tuple(reference.image_shape) != size:
                    (h, w), (s, _) = reference.image_shape, size
                    raise ValueError(f"--reference {config.reference} holds {h}x{w} images but {m.given} draws "
                                     f"{s}x{s} ones: use the reference batch of the samples' resolution")
            settings = {"reference_sha256": content_hash(config.reference), "features": net.name,
                        "features_identity": net.identity, "cfg_start_step": config.cfg_start_step,
                        "temperature": config.temperature, "seed": config.seed, "use_ema": config.use_ema,
                        "precision": config.precision, "shard_size": config.shard_size,
                        "generator_device": device.type}
            checkpoints = [{"given": m.given, "path": m.path, "sha256": content_hash(m.checkpoint_file),
                            "ratio": m.ratio} for m in models]
            grid = {"checkpoints": [m.given for m in models], "cfg": cfgs,
                    "steps_per_scale": [s if isinstance(s, int) else list(s) for s in steps_settings],
                    "num_samples": config.num_samples, "confirm": config.confirm, "reference": config.reference}
            held.enter_context(run_lock(folder.path))
            entries = folder.start(settings, checkpoints, grid)
            state["network"] = net
            state["checkpoint_sha256"] = {c["path"]: c["sha256"] for c in checkpoints}
            state["reference"] = reference_statistics(config.reference, net, config.eval_batch_size,
                                                      folder.reference_cache)
            state["rows"] = sr.read_rows(folder.path)
            return entries

        entries = agree(start)
        search = _unique([make_point(config, m, e["name"], e["label"], steps, cfg, config.num_samples)
                          for m, e in zip(models, entries) for steps in steps_settings for cfg in cfgs], _identity)
        _run_points("search", config, search, folder, state, out, device, log)
        if config.confirm is not None and not out.stopped:
            best = agree(lambda: _best_cfgs(config, search, state["rows"]))
            by_path = {m.path: (m, e) for m, e in zip(models, entries)}
            confirm = [make_point(config, by_path[p.path][0], p.model, p.label, p.steps, cfg, config.confirm)
                       for p, cfg in zip(_settings(search), best)]
            _run_points("confirm", config, confirm, folder, state, out, device, log)
    out.rows = state.get("rows", [])
    return out


def _identity(point: Point):
    return point.path, point.steps, point.cfg, point.num_samples


def _settings(points) -> list:
    """The first point of each (model, steps) setting, in order."""
    return _unique(points, lambda p: (p.path, p.steps))


def _best_cfgs(config: SweepConfig, search, rows) -> list:
    """Per setting of the search, the guidance of its search row with the lowest FID (over every
    weight this sweep evaluated for it, by this command or an earlier one)."""
    fid = metric_key(config.features, "fid")
    best = []
    for p in _settings(search):
        setting = {k: v for k, v in p.columns(config).items() if k != "cfg"}
        runs = [r for r in rows if all(r[k] == v for k, v in setting.items())]
        best.append(min(runs, key=lambda r: r[fid])["cfg"])
    return best


def _run_points(stage: str, config: SweepConfig, points, folder: SweepFolder, state: dict, out: SweepOutputs,
                device, log):
    todo = agree(lambda: [i for i, p in enumerate(points) if sr.find_row(state["rows"], p.columns(config)) is None])
    out.skipped += [p for i, p in enumerate(points) if i not in todo]
    log(f"[sweep] {stage}: {len(points)} points, {len(points) - len(todo)} evaluated before, {len(todo)} to do")
    sampler, model_path = None, None
    for n, i in enumerate(todo):
        if config.max_points is not None and len(out.evaluated) >= config.max_points:
            out.stopped = True
            break
        point = points[i]
        if point.path != model_path:
            sampler = None  # the previous model, its caches and graphs go before the next one loads
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            # One Sampler per model: its compiled steps and CUDA graphs serve every point of the model.
            sampler = Sampler(load_for_sampling(config.sample_config(point.path), device), compile=config.compile)
            model_path = point.path
        start = time.perf_counter()
        point_dir = point.folder(folder.path)
        samples = sample(config.sample_config(point.path, str(point_dir), steps_per_scale=list(point.steps),
                                              cfg=point.cfg, num_samples=point.num_samples), sampler=sampler,
                         device=device, checkpoint_sha256=state.get("checkpoint_sha256", {}).get(point.path))

        def evaluate():
            if device.type == "cuda":
                torch.cuda.empty_cache()  # TensorFlow's Inception shares the GPU
            metrics = evaluate_samples(state["reference"], samples.samples_npz, state["network"],
                                       config.eval_batch_size)
            row = {**point.columns(config), **metrics, "seconds": round(time.perf_counter() - start, 2),
                   "samples": str(point_dir.relative_to(folder.path))}
            state["rows"] = sr.append_row(folder.path, row, config.features)
            report.write_report(folder.path, state["rows"], config.features)
            if not config.keep_samples:
                samples.samples_npz.unlink()
            fid = metric_key(config.features, "fid")
            log(f"[sweep] {n + 1}/{len(todo)} {point.describe()}: {fid} {row[fid]:.4g} ({row['seconds']:.0f} s)")

        agree(evaluate)  # the others wait here for process 0's row
        out.evaluated.append(point)

