"""First run in minutes: the whole pipeline on scikit-learn's bundled digits, on a CPU.

    python demo.py                          # outputs/demo; a few minutes on 2 CPU cores
    python demo.py --output_dir D --force   # redo every stage

Stages, each through the project's own code path:
  1. data        common/digits.py: the 1797 digits upscaled to 32 px, a fixed train/val split, as an ImageFolder
  2. autoencoder train_ae_codebook (--train_all): a small VQ autoencoder from scratch
  3. generator   main.py's training (training/engine.py): a small class-conditional checkerboard generator
  4. sampling    main_sample.py's `sample`: every class, with the EMA weights
  5. report      held-out per-token NLL per scale, and how often a logistic regression trained on the
                 real 8x8 training digits recognises the requested class (next to its accuracy on
                 held-out real digits)
Writes D/report.json, D/grid.png (one row per class) and D/checkerboard_steps.png (the fill order).
A rerun reuses the stages that finished with the same settings (and resumes an interrupted
training); --force redoes them all.
"""
import os

# Spinning OpenMP threads make torch several times slower as soon as another process shares the
# two cores (measured: 1.1 s instead of 0.27 s per training step); set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from common.config import (ArgumentParser, add_arguments, command_line, given_options, make,  # noqa: E402
                           option, recheck)
from main_sample import SampleConfig, sample  # noqa: E402
from models.checkpoint import load_checkpoint_file, load_model, read_config  # noqa: E402
from train_ae_codebook.autoencoder_files import CHECKPOINT_NAME, CONFIG_NAME  # noqa: E402
from train_ae_codebook.train_config import make_config as make_ae_config  # noqa: E402
from train_ae_codebook.training import train_autoencoder  # noqa: E402
from training.checkpoint import LAST  # noqa: E402
from training.data import image_folder_samples, to_model_range  # noqa: E402
from common.files import atomic_copy, atomic_write_text  # noqa: E402
from common.images import load_rgb  # noqa: E402
from common.digits import digits_arrays, write_digits_imagefolder  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.engine import train  # noqa: E402
from sampling.figures import image_grid, save_png  # noqa: E402

REPO = Path(__file__).resolve().parent
NUM_CLASSES = 10
DIGIT_SIZE = 8  # scikit-learn's digits are 8x8 ...
DIGIT_LEVELS = 16  # ... with values 0..16 (ink is high)
WHITE = 255
GRID_ZOOM = 2  # the grid's 32 px digits enlarged for the README
GRID_COLUMNS = 10  # samples per class shown in grid.png
FILL_ROWS = 5  # samples (classes 0..4) shown in checkerboard_steps.png
STAGES_FILE = "stages.json"
AUTOENC_PATHS = ("checkpoint_path", "config_path")
PROG = "demo.py"


@dataclass
class DemoConfig:
    output_dir: str = option("output folder", "outputs/demo")
    force: bool = option("redo every stage instead of reusing finished ones", False)
    seed: int = option("seeds the data split, both trainings and the samples", 0)
    threads: int = option("torch CPU threads", 2, ge=1)
    img_size: int = option("digit size in pixels (a multiple of 8)", 32, ge=DIGIT_SIZE)
    val_fraction: float = option("held-out share of the digits", 0.2, gt=0, lt=1)
    autoencoder_config: str = option("autoencoder config (its args: section is the autoencoder recipe)",
                                     str(REPO / "train_ae_codebook" / "autoencoder_config_digits.yaml"),
                                     default_text="train_ae_codebook/autoencoder_config_digits.yaml")
    generator_config: str = option("generator config (autoencoder paths relative to the output folder)",
                                   str(REPO / "configs" / "config_digits.yaml"),
                                   default_text="configs/config_digits.yaml")
    samples_per_class: int = option("generated digits per class", 30, ge=1)
    cfg: float = option("classifier-free guidance weight", 2.5, ge=0)
    cfg_start_step: int = option("first guided step", 1, ge=0)
    temperature: float = option("sampling temperature", 0.7, ge=0)
    steps_per_scale: int = option("sampling steps per scale", 4, ge=1)
    sample_batch_size: int = option("samples per generation batch", 50, ge=1)
    eval_batch_size: int = option("images per batch of the held-out NLL", 100, ge=1)
    progress: bool = option("show progress bars", True, negative_aliases=("no_progress",))
    # Shortened runs for the tests: hidden, the configs' settings are the demo.
    ae_epochs: float | None = option("autoencoder epochs", None, gt=0, hidden=True)
    ae_init_steps: int | None = option("autoencoder codebook initialisation steps", None, ge=1, hidden=True)
    epochs: int | None = option("generator epochs", None, ge=1, hidden=True)

    @property
    def autoencoder_args(self) -> dict:
        """Overrides of the autoencoder config's `args:` section (empty: the config's own)."""
        return {k: v for k, v in (("epochs", self.ae_epochs), ("init_steps", self.ae_init_steps)) if v is not None}

    @property
    def generator_args(self) -> dict:
        """Overrides of the generator config's `args:` section (empty: the config's own)."""
        return {"epochs": self.epochs} if self.epochs is not None else {}

    def sampling_settings(self) -> dict:
        """What the sampling stage depends on: a change re-runs it, and the report shows it."""
        return {k: getattr(self, k) for k in ("samples_per_class", "cfg", "cfg_start_step", "temperature",
                                              "steps_per_scale", "seed")}

    def validate(self):
        recheck(self)
        if self.img_size % DIGIT_SIZE:
            raise ValueError(f"img_size must be a multiple of {DIGIT_SIZE} (generated digits are shrunk back to "
                             f"{DIGIT_SIZE}x{DIGIT_SIZE} for the classifier), got {self.img_size}")
        for path in (self.autoencoder_config, self.generator_config):
            if not Path(path).is_file():
                raise FileNotFoundError(f"config not found: {path}")


class Stages:
    """`stages.json` in the output folder: per stage the settings it ran with, whether it finished
    and how long it took. A stage is reused when it finished with the same settings and no earlier
    stage ran again; otherwise its folder is cleared first, unless an unfinished run with the same
    settings is there to be resumed."""

    def __init__(self, output_dir: Path, force: bool):
        self.path = output_dir / STAGES_FILE
        self.records = {} if force or not self.path.is_file() else json.loads(self.path.read_text())
        self.upstream_ran = False
        self.seconds, self.reused = {}, []

    def run(self, name: str, settings: dict, folder: Path | None, work):
        settings = json.loads(json.dumps(settings))  # as stored: tuples become lists
        record = self.records.get(name, {})
        same = record.get("settings") == settings and not self.upstream_ran
        if same and record.get("finished"):
            self.seconds[name], result = record["seconds"], record.get("result")
            self.reused.append(name)
            log(f"{name}: reusing the finished stage ({record['seconds']:.0f} s when it ran)")
            return result
        if folder is not None and folder.exists() and not same:
            shutil.rmtree(folder)
        self.records[name] = {"settings": settings, "finished": False}
        self._save()
        start = time.perf_counter()
        result = work()
        self.seconds[name] = time.perf_counter() - start
        self.records[name].update(finished=True, seconds=self.seconds[name], result=result)
        self._save()
        self.upstream_ran = True
        log(f"{name}: done in {self.seconds[name]:.0f} s")
        return result

    def _save(self):
        atomic_write_text(self.path, json.dumps(self.records, indent=1))


def log(message: str):
    print(f"[demo] {message}", flush=True)


# ---- stages -------------------------------------------------------------------------------------
def train_demo_autoencoder(config: DemoConfig, data_dir: Path, out_dir: Path) -> None:
    _, yaml_args = read_config(config.autoencoder_config)
    overrides = {"data_path": str(data_dir / "train"), "output_dir": str(out_dir), "device": "cpu",
                 "seed": config.seed, "img_size": config.img_size, **config.autoencoder_args}
    train_autoencoder(make_ae_config(config.autoencoder_config, yaml_args, overrides))


def write_generator_config(config: DemoConfig, out_dir: Path) -> Path:
    """The demo's generator config with its autoencoder paths resolved against the output folder."""
    model_section, args_section = read_config(config.generator_config)
    autoenc = model_section.get("autoenc")
    if not isinstance(autoenc, dict) or not all(autoenc.get(k) for k in AUTOENC_PATHS):
        raise ValueError(f"{config.generator_config}: model.autoenc needs {' and '.join(AUTOENC_PATHS)} "
                         f"(relative to the demo's output folder)")
    for key in AUTOENC_PATHS:
        autoenc[key] = str((out_dir / autoenc[key]).resolve())
    path = out_dir / "generator_config.yaml"
    atomic_write_text(path, yaml.safe_dump({"model": model_section, "args": args_section}, sort_keys=False))
    return path


def train_generator(config: DemoConfig, config_path: Path, data_dir: Path, run_dir: Path) -> None:
    """main.py's training, encoding each batch as it is drawn: for the demo's dozen epochs that costs
    about what main.py's token cache of all ten crops would."""
    # A mirrored digit is another glyph (or none): only the five unmirrored crops are drawn.
    overrides = {"data_path": str(data_dir), "output_dir": str(run_dir), "device": "cpu", "seed": config.seed,
                 "progress": config.progress, "mirrored_crops": False, **config.generator_args}
    if (run_dir / LAST).is_file():
        overrides["resume"] = str(run_dir)
    train_config = TrainConfig.load(config_path, **overrides)
    train(train_config)


def has_ema(run_dir: Path) -> bool:
    """Whether the run kept EMA weights (the demo samples and evaluates with them when it did)."""
    return load_checkpoint_file(run_dir / LAST).get("model_ema") is not None


def sample_digits(config: DemoConfig, run_dir: Path, out_dir: Path) -> None:
    sample_config = SampleConfig(
        checkpoint=str(run_dir), output_dir=str(out_dir), use_ema=has_ema(run_dir), cfg=config.cfg,
        cfg_start_step=config.cfg_start_step, steps_per_scale=config.steps_per_scale,
        temperature=config.temperature, seed=config.seed, classes=list(range(NUM_CLASSES)),
        num_samples=NUM_CLASSES * config.samples_per_class, batch_size=config.sample_batch_size,
        grid_samples=NUM_CLASSES * config.samples_per_class, save_fill=True, vis_samples=FILL_ROWS, device="cpu")
    sample(sample_config, device="cpu")


@torch.no_grad()
def heldout_nll(run_dir: Path, val_dir: Path, batch_size: int) -> dict:
    """Per-token cross entropy (nats) of the held-out images per scale and overall, with the EMA
    weights (when kept) in eval mode (no label drop or random blocks), averaged over images."""
    model = load_model(run_dir, use_ema=has_ema(run_dir))
    _, samples = image_folder_samples(val_dir, model.cfg.num_classes)
    sums, count = {}, 0
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images = torch.stack([to_model_range(load_rgb(path)) for path, _ in chunk])  # (B, 3, H, W)
        labels = torch.tensor([label for _, label in chunk])
        _, stats = model.loss(model.autoenc.encode_pyramid(images, model.scale_sizes), labels)
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value.item() * len(chunk)
        count += len(chunk)
    means = {k: v / count for k, v in sums.items()}
    return {"num_images": count,
            "per_token_nats": {str(s): means[f"loss_scale_size{s}"] for s in model.scale_sizes},
            "per_token_nats_all_scales": means["loss_total"],
            "top1_accuracy": {str(s): means[f"top1_acc_scale_size{s}"] for s in model.scale_sizes}}


def to_digit_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) dark-on-white images -> (N, 8, 8) in scikit-learn's digit range 0..16 (ink high),
    by averaging blocks (H a multiple of 8): the inverse of common/digits.py's inversion and upscaling."""
    n, h, w, _ = images.shape
    grey = images.astype(np.float64).mean(axis=3)  # (N, H, W)
    blocks = grey.reshape(n, DIGIT_SIZE, h // DIGIT_SIZE, DIGIT_SIZE, w // DIGIT_SIZE).mean(axis=(2, 4))
    return (WHITE - blocks) * DIGIT_LEVELS / WHITE


def classify(samples_npz: Path, config: DemoConfig) -> dict:
    """A logistic regression on the real 8x8 training digits, scored on held-out real digits and
    on the generated ones (their requested class as the truth)."""
    from sklearn.linear_model import LogisticRegression

    train_x, train_y, val_x, val_y = digits_arrays(config.val_fraction, config.seed)
    classifier = LogisticRegression(max_iter=5000)
    classifier.fit(train_x.reshape(len(train_x), -1), train_y)
    real = float(classifier.score(val_x.reshape(len(val_x), -1), val_y))
    with np.load(samples_npz) as data:
        images, labels = data["arr_0"], data["arr_1"]
    predicted = classifier.predict(to_digit_pixels(images).reshape(len(images), -1))
    per_class = {str(c): float(np.mean(predicted[labels == c] == c)) for c in range(NUM_CLASSES)}
    return {"heldout_real_accuracy": real, "generated_accuracy": float(np.mean(predicted == labels)),
            "generated_accuracy_per_class": per_class, "num_generated": int(len(labels)),
            "num_heldout_real": int(len(val_y))}


def class_rows_grid(samples_npz: Path) -> np.ndarray:
    """One row per class with its first GRID_COLUMNS samples (fewer if there are fewer), enlarged GRID_ZOOM times."""
    with np.load(samples_npz) as data:
        images, labels = data["arr_0"], data["arr_1"]
    columns = min(GRID_COLUMNS, min(np.sum(labels == c) for c in range(NUM_CLASSES)))
    rows = [images[labels == c][:columns] for c in range(NUM_CLASSES)]
    grid = image_grid(np.concatenate(rows), ncol=columns)
    return grid.repeat(GRID_ZOOM, axis=0).repeat(GRID_ZOOM, axis=1)


# ---- the demo -----------------------------------------------------------------------------------
def run_demo(config: DemoConfig) -> dict:
    """Every stage (reusing finished ones); returns the report also written to D/report.json."""
    config.validate()
    torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, config.force)
    data_dir, ae_dir, run_dir, samples_dir = out / "data", out / "autoenc", out / "generator", out / "samples"
    total_start = time.perf_counter()

    log(f"1/5 data: scikit-learn digits at {config.img_size} px -> {data_dir}")
    stages.run("data", {"img_size": config.img_size, "val_fraction": config.val_fraction, "seed": config.seed},
               data_dir, lambda: str(write_digits_imagefolder(data_dir, config.img_size, config.val_fraction,
                                                              config.seed)))
    log(f"2/5 autoencoder: train_ae_codebook --train_all -> {ae_dir}")
    stages.run("autoencoder", {"config": read_config(config.autoencoder_config), "args": config.autoencoder_args,
                               "seed": config.seed, "img_size": config.img_size},
               ae_dir, lambda: train_demo_autoencoder(config, data_dir, ae_dir))
    for name in (CHECKPOINT_NAME, CONFIG_NAME):
        if not (ae_dir / name).is_file():
            raise FileNotFoundError(f"autoencoder stage left no {ae_dir / name}: rerun with --force")
    log(f"3/5 generator: main.py training -> {run_dir}")
    generator_config = write_generator_config(config, out)
    stages.run("generator", {"config": read_config(generator_config), "args": config.generator_args,
                             "seed": config.seed},
               run_dir, lambda: train_generator(config, generator_config, data_dir, run_dir))
    log(f"4/5 sampling: main_sample.py, {config.samples_per_class} per class, cfg {config.cfg}, "
        f"temperature {config.temperature} -> {samples_dir}")
    stages.run("sampling", config.sampling_settings(), samples_dir, lambda: sample_digits(config, run_dir, samples_dir))
    log("5/5 report: held-out NLL, classifier on real and generated digits")
    eval_start = time.perf_counter()
    nll = heldout_nll(run_dir, data_dir / "val", config.eval_batch_size)
    recognition = classify(samples_dir / "samples.npz", config)
    save_png(class_rows_grid(samples_dir / "samples.npz"), out / "grid.png")
    atomic_copy(samples_dir / "checkerboard_fill.png", out / "checkerboard_steps.png")
    stages.seconds["report"] = time.perf_counter() - eval_start

    epoch = int(load_checkpoint_file(run_dir / LAST)["epoch"])
    report = {
        "heldout_nll": nll,
        "classifier": recognition,
        "seconds_per_stage": stages.seconds,
        "reused_stages": stages.reused,
        "seconds_this_run": time.perf_counter() - total_start,
        "generator_epochs": epoch + 1,
        "sampling": config.sampling_settings(),
        "files": {"grid": str(out / "grid.png"), "checkerboard_steps": str(out / "checkerboard_steps.png"),
                  "samples": str(samples_dir / "samples.npz"), "generator": str(run_dir),
                  "autoencoder": str(ae_dir)},
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    return report


def summary(report: dict) -> str:
    nll, cls = report["heldout_nll"], report["classifier"]
    lines = [f"held-out NLL per token (nats, {nll['num_images']} images): "
             + ", ".join(f"{s}x{s} {v:.3f}" for s, v in nll["per_token_nats"].items())
             + f"; all scales {nll['per_token_nats_all_scales']:.3f}",
             f"recognised as the requested class: {cls['generated_accuracy']:.1%} of {cls['num_generated']} "
             f"generated digits (classifier on held-out real digits: {cls['heldout_real_accuracy']:.1%})",
             "seconds per stage: " + ", ".join(f"{k} {v:.0f}" + (" (reused)" if k in report["reused_stages"] else "")
                                              for k, v in report["seconds_per_stage"].items())
             + f"; this run {report['seconds_this_run']:.0f}",
             f"files: {report['files']['grid']}, {report['files']['checkerboard_steps']}"]
    return "\n".join(lines)


def get_args_parser() -> ArgumentParser:
    p = ArgumentParser(PROG, description="The whole pipeline on scikit-learn's digits, on a CPU.")
    return add_arguments(p, DemoConfig)


def main(argv=None) -> int:
    try:
        config = make(DemoConfig, command_line(given_options(get_args_parser(), argv)))
    except (ValueError, FileNotFoundError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        report = run_demo(config)
    except (ValueError, FileNotFoundError, yaml.YAMLError) as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(summary(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
