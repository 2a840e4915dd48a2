"""What demo.py is asked for: `DemoConfig`, one field per option."""
from dataclasses import dataclass
from pathlib import Path

from common.config import option, recheck

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10
DIGIT_SIZE = 8  # scikit-learn's digits are 8x8 ...
DIGIT_LEVELS = 16  # ... with values 0..16 (ink is high)


@dataclass
class DemoConfig:
    output_dir: str = option("output folder", "outputs/demo")
    force: bool = option("redo every stage instead of reusing finished ones", False)
    seed: int = option("seeds the data split, both trainings and the samples", 0, ge=0)
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
    update_readme: bool = option("after the run, copy its report to docs/demo_report.json, its grid to "
                                 "docs/demo_grid.png and its numbers into README.md", False)
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
