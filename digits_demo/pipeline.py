"""The demo's stages, each through the project's own code path, and `run_demo`:

  1. data        common/digits.py: the 1797 digits upscaled to 32 px, a fixed train/val split, as an ImageFolder
  2. autoencoder train_ae_codebook (--train_all): a small VQ autoencoder from scratch
  3. generator   main.py's training (training/engine.py): a small class-conditional checkerboard generator
  4. sampling    sampling/run.py's `sample`, as main_sample.py: every class, with the EMA weights
  5. report      report.py: held-out NLL per scale, recognition of the generated digits, the figures
"""
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from common.digits import write_digits_imagefolder
from common.files import atomic_copy, atomic_write_text, run_lock
from models.checkpoint_format import LAST, load_checkpoint_file, read_config
from sampling.config import SampleConfig
from sampling.figures import save_png
from sampling.run import sample
from train_ae_codebook.autoencoder_files import CHECKPOINT_NAME, CONFIG_NAME
from train_ae_codebook.train_config import make_config as make_ae_config
from train_ae_codebook.training import train_autoencoder
from training.config import TrainConfig
from training.engine import train

from .config import GENERATOR_DIR, NUM_CLASSES, REPO, DemoConfig
from .report import class_rows_grid, classify, has_ema, heldout_nll
from .stages import Stages, log

FILL_ROWS = 5  # samples (classes 0..4) shown in checkerboard_steps.png
AUTOENC_PATHS = ("checkpoint_path", "config_path")
GENERATOR_CONFIG = "generator_config.yaml"
REPORT = "report.json"
GRID, STEPS_FIGURE = "grid.png", "checkerboard_steps.png"
# What the demo writes directly in its output folder, besides stages.json and the stage folders.
OWN_FILES = ("data", "autoenc", GENERATOR_DIR, "samples", GENERATOR_CONFIG, REPORT, GRID, STEPS_FIGURE)


def train_demo_autoencoder(config: DemoConfig, data_dir: Path, out_dir: Path) -> None:
    _, yaml_args = read_config(config.autoencoder_config)
    overrides = {"data_path": str(data_dir / "train"), "output_dir": str(out_dir), "device": "cpu",
                 "seed": config.seed, "img_size": config.img_size, **config.autoencoder_args}
    train_autoencoder(make_ae_config(config.autoencoder_config, yaml_args, overrides))


def write_generator_config(config: DemoConfig, out_dir: Path, name: str = GENERATOR_CONFIG,
                           model_overrides: dict | None = None) -> Path:
    """The demo's generator config with its autoencoder paths resolved against the output folder (and
    `model_overrides` applied to its model section: see `override`), as out_dir/name."""
    model_section, args_section = read_config(config.generator_config)
    autoenc = model_section.get("autoenc")
    if not isinstance(autoenc, dict) or not all(autoenc.get(k) for k in AUTOENC_PATHS):
        raise ValueError(f"{config.generator_config}: model.autoenc needs {' and '.join(AUTOENC_PATHS)} "
                         f"(relative to the demo's output folder)")
    for key in AUTOENC_PATHS:
        autoenc[key] = str((out_dir / autoenc[key]).resolve())
    model_section = override(model_section, model_overrides)
    path = out_dir / name
    atomic_write_text(path, yaml.safe_dump({"model": model_section, "args": args_section}, sort_keys=False))
    return path


def override(model_section: dict, overrides: dict | None) -> dict:
    """The section with each key of `overrides` set to its value, or removed where the value is None."""
    section = dict(model_section)
    for key, value in (overrides or {}).items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value
    return section


def train_generator(config: DemoConfig, config_path: Path, data_dir: Path, run_dir: Path,
                    seed: int | None = None) -> None:
    """main.py's training (seeded by `seed`, else the demo's seed), encoding each batch as it is
    drawn: for the demo's dozen epochs that costs about what main.py's token cache of all ten crops
    would."""
    # A mirrored digit is another glyph (or none): only the five unmirrored crops are drawn.
    overrides = {"data_path": str(data_dir), "output_dir": str(run_dir), "device": "cpu",
                 "seed": config.seed if seed is None else seed,
                 "progress": config.progress, "mirrored_crops": False, **config.generator_args}
    if (run_dir / LAST).is_file():
        overrides["resume"] = str(run_dir)
    train(TrainConfig.load(config_path, **overrides))


def sample_digits(config: DemoConfig, run_dir: Path, out_dir: Path) -> None:
    """config.samples_per_class of every class, as main_sample.py would draw them."""
    sample(SampleConfig(
        checkpoint=str(run_dir), output_dir=str(out_dir), use_ema=has_ema(run_dir), cfg=config.cfg,
        cfg_start_step=config.cfg_start_step, steps_per_scale=config.steps_per_scale,
        temperature=config.temperature, seed=config.seed, classes=list(range(NUM_CLASSES)),
        num_samples=NUM_CLASSES * config.samples_per_class, batch_size=config.sample_batch_size,
        grid_samples=NUM_CLASSES * config.samples_per_class, save_fill=True, vis_samples=FILL_ROWS, device="cpu"),
        device="cpu")


def provenance(argv: list[str]) -> dict:
    """Where the numbers come from: the command, the date, the commit (with "+changes" when the
    checkout differs from it) and the machine."""
    def git(*args):
        try:
            done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        except OSError:  # no git on this machine
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+changes"
    return {"command": " ".join(["python demo.py", *argv]), "date": datetime.date.today().isoformat(),
            "commit": commit or "unknown", "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                                                     f"{torch.get_num_threads()} torch threads, "
                                                     f"Python {sys.version.split()[0]}, torch {torch.__version__}"}


def run_in_output_dir(config: DemoConfig, argv, run_stages):
    """`run_stages(config, output folder, provenance)` with the folder locked, after the checks.
    `argv`: the command line, for the report's provenance."""
    config.validate()
    torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    run = provenance(list(argv))  # now: the code that runs is the checkout as it is at the start
    with run_lock(out):
        return run_stages(config, out, run)


def run_demo(config: DemoConfig, argv: list[str] = ()) -> dict:
    """Every stage (reusing finished ones); returns the report also written to <output_dir>/report.json."""
    return run_in_output_dir(config, argv, _run_stages)


def train_stages(config: DemoConfig, stages: Stages, out: Path, count: int) -> tuple[Path, Path]:
    """Stages 1-3 of `count` (data, autoencoder, generator), shared by the demo and the study;
    returns the data folder and the generator's run folder."""
    data_dir, ae_dir, run_dir = out / "data", out / "autoenc", out / GENERATOR_DIR
    log(f"1/{count} data: scikit-learn digits at {config.img_size} px -> {data_dir}")
    stages.run("data", {"img_size": config.img_size, "val_fraction": config.val_fraction, "seed": config.seed},
               data_dir, lambda: str(write_digits_imagefolder(data_dir, config.img_size, config.val_fraction,
                                                              config.seed)))
    log(f"2/{count} autoencoder: train_ae_codebook --train_all -> {ae_dir}")
    stages.run("autoencoder", {"config": read_config(config.autoencoder_config), "args": config.autoencoder_args,
                               "seed": config.seed, "img_size": config.img_size},
               ae_dir, lambda: train_demo_autoencoder(config, data_dir, ae_dir))
    for name in (CHECKPOINT_NAME, CONFIG_NAME):
        if not (ae_dir / name).is_file():
            raise FileNotFoundError(f"autoencoder stage left no {ae_dir / name}: rerun with --force")
    log(f"3/{count} generator: main.py training -> {run_dir}")
    generator_config = write_generator_config(config, out)
    stages.run("generator", {"config": read_config(generator_config), "args": config.generator_args,
                             "seed": config.seed},
               run_dir, lambda: train_generator(config, generator_config, data_dir, run_dir))
    return data_dir, run_dir


def _run_stages(config: DemoConfig, out: Path, run: dict) -> dict:
    stages = Stages(out, config.force, OWN_FILES)
    ae_dir, samples_dir = out / "autoenc", out / "samples"
    total_start = time.perf_counter()
    data_dir, run_dir = train_stages(config, stages, out, 5)
    log(f"4/5 sampling: {config.samples_per_class} per class, cfg {config.cfg}, temperature {config.temperature} "
        f"-> {samples_dir}")
    stages.run("sampling", config.sampling_settings(), samples_dir, lambda: sample_digits(config, run_dir, samples_dir))
    log("5/5 report: held-out NLL, classifier on real and generated digits")
    eval_start = time.perf_counter()
    nll = heldout_nll(run_dir, data_dir / "val", config.eval_batch_size)
    recognition = classify(samples_dir / "samples.npz", config.val_fraction, config.seed)
    save_png(class_rows_grid(samples_dir / "samples.npz"), out / GRID)
    atomic_copy(samples_dir / "checkerboard_fill.png", out / STEPS_FIGURE)
    stages.seconds["report"] = time.perf_counter() - eval_start

    report = {
        "heldout_nll": nll,
        "classifier": recognition,
        "seconds_per_stage": stages.seconds,
        "reused_stages": stages.reused,
        "seconds_this_run": time.perf_counter() - total_start,
        "generator_epochs": int(load_checkpoint_file(run_dir / LAST)["epoch"]) + 1,
        "sampling": config.sampling_settings(),
        "run": run,
        "files": {"grid": str(out / GRID), "checkerboard_steps": str(out / STEPS_FIGURE),
                  "samples": str(samples_dir / "samples.npz"), "generator": str(run_dir), "autoencoder": str(ae_dir)},
    }
    atomic_write_text(out / REPORT, json.dumps(report, indent=1))
    return report
