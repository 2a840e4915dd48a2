"""What demo.py is asked for: `DemoConfig`, one field per option."""
from dataclasses import dataclass
from pathlib import Path

from common.config import option, recheck
from models.checkerboard import scale_ratio_from_config
from sweep.grid import cfg_values, steps_settings

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10
DIGIT_SIZE = 8  # scikit-learn's digits are 8x8 ...
DIGIT_LEVELS = 16  # ... with values 0..16 (ink is high)
SINGLE_SCALE = "single"
GENERATOR_DIR = "generator"  # the demo's model: <output_dir>/generator (app.py shows it)


@dataclass
class DemoConfig:
    output_dir: str = option("output folder", "outputs/demo", path=True)
    force: bool = option("redo every stage instead of reusing finished ones", False)
    seed: int = option("seeds the data split, both trainings and the samples", 0, ge=0)
    threads: int = option("torch CPU threads", 2, ge=1)
    img_size: int = option("digit size in pixels (a multiple of 8)", 32, ge=DIGIT_SIZE)
    val_fraction: float = option("held-out share of the digits", 0.2, gt=0, lt=1)
    autoencoder_config: str = option("autoencoder config (its args: section is the autoencoder recipe)",
                                     str(REPO / "train_ae_codebook" / "autoencoder_config_digits.yaml"),
                                     default_text="train_ae_codebook/autoencoder_config_digits.yaml", path=True)
    generator_config: str = option("generator config (autoencoder paths relative to the output folder)",
                                   str(REPO / "configs" / "config_digits.yaml"),
                                   default_text="configs/config_digits.yaml", path=True)
    samples_per_class: int = option("generated digits per class", 30, ge=1)
    cfg: float = option("classifier-free guidance weight", 2.5, ge=0)
    cfg_start_step: int = option("first guided step", 1, ge=0)
    temperature: float = option("sampling temperature", 0.7, ge=0)
    steps_per_scale: int = option("sampling steps per scale", 4, ge=1)
    sample_batch_size: int = option("samples per generation batch", 50, ge=1)
    eval_batch_size: int = option("images per batch of the held-out NLL", 100, ge=1)
    progress: bool = option("show progress bars", True, negative_aliases=("no_progress",))
    update_readme: bool = option("after the run, copy its report to docs/demo_report.json, its grid to "
                                 "docs/demo_grid.png and its numbers into README.md (with --study: the study's "
                                 "report, plots and numbers)", False)
    study: bool = option("the scale-ratio study instead of the demo's samples and report: the demo's generator "
                         "trained also at the other --study_models, then a guidance x steps-per-scale sweep of "
                         "each, scored with the digits feature network (Fig. 4a/5-style curves in <output_dir>/study)",
                         False)
    study_models: list[str] = option("the study's generators: scale ratios (a number or sqrt(N); the 8x8 latent "
                                     "grid allows sqrt(2), 2 and 3, not 4) and 'single' for one scale",
                                     ["2", "3", SINGLE_SCALE], metavar="RATIO")
    study_cfg: list[str] = option("the study's guidance weights and ranges start:stop:step", ["0:1.5:0.25"],
                                  metavar="CFG")
    study_steps: list[str] = option("the study's steps per scale of the multiscale generators", ["1", "2", "4", "8"],
                                    metavar="STEPS")
    study_single_steps: list[str] = option("the study's steps of the single-scale generator (its total steps)",
                                           ["4", "8", "16", "32"], metavar="STEPS")
    study_samples: int = option("samples per point of the study's sweep (class-balanced)", 1000, ge=NUM_CLASSES)
    study_temperature: float = option("the study's sampling temperature (the paper's FID runs: 1.0)", 1.0, ge=0)
    study_cfg_start_step: int = option("the study's first guided step", 1, ge=0)
    study_noise_seeds: int = option("the study's best point of its first generator drawn again with this many "
                                    "other seeds: the spread of its FID is the sampling noise", 2, ge=0)
    study_training_seeds: int = option("each study generator trained again with this many other seeds, each "
                                       "scored at its generator's best point and by its held-out NLL: the spread "
                                       "over trainings", 2, ge=0)
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

    def study_settings(self) -> dict:
        """What the study's sweep depends on (besides the generators): a change runs it again."""
        return {k: getattr(self, k) for k in ("study_models", "study_cfg", "study_steps", "study_single_steps",
                                              "study_samples", "study_temperature", "study_cfg_start_step",
                                              "study_noise_seeds", "study_training_seeds", "seed",
                                              "sample_batch_size")}

    def validate(self):
        recheck(self)
        if self.study:
            if not self.study_models:
                raise ValueError("--study_models: no generator given")
            for model in self.study_models:
                try:
                    ratio = None if model == SINGLE_SCALE else scale_ratio_from_config(model)
                except ValueError as e:
                    raise ValueError(f"--study_models: {e}") from None
                if ratio is not None and not ratio > 1:
                    raise ValueError(f"--study_models: scale ratio {model} must be > 1")
            cfg_values(self.study_cfg, "--study_cfg")
            steps_settings(self.study_steps, "--study_steps")
            steps_settings(self.study_single_steps, "--study_single_steps")
            if self.study_samples % NUM_CLASSES:
                raise ValueError(f"--study_samples {self.study_samples} is not a multiple of the {NUM_CLASSES} "
                                 f"classes (the sweep draws as many of each)")
        if self.img_size % DIGIT_SIZE:
            raise ValueError(f"img_size must be a multiple of {DIGIT_SIZE} (generated digits are shrunk back to "
                             f"{DIGIT_SIZE}x{DIGIT_SIZE} for the classifier), got {self.img_size}")
        for path in (self.autoencoder_config, self.generator_config):
            if not Path(path).is_file():
                raise FileNotFoundError(f"config not found: {path}")
