"""Training records of process 0: TensorBoard scalars and images, metrics.jsonl for scripts, and
Weights & Biases when a project is given."""
import json
from pathlib import Path

import torch

from common.files import journal_file, naming_file
from common.tensorboard_writer import summary_writer

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Does nothing where `enabled` is false (processes other than 0)."""

    def __init__(self, output_dir, enabled: bool = True, tensorboard_dir=None, wandb_run=None):
        self.enabled = enabled
        self.path = Path(output_dir) / METRICS_FILE
        tensorboard_dir = tensorboard_dir or Path(output_dir) / "tensorboard"
        self.writer = summary_writer(tensorboard_dir) if enabled else None
        self.wandb_run = wandb_run if enabled else None

    def scalars(self, values: dict, step: int, prefix: str = "train"):
        if not self.enabled:
            return
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}", value, step)
        if self.wandb_run is not None:
            self.wandb_run.log({f"{prefix}/{key}": value for key, value in values.items()}, step=step)

    def record(self, entry: dict):
        if not self.enabled:
            return
        journal_file(self.path)
        with naming_file(self.path), open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def image(self, tag: str, image: torch.Tensor, step: int):
        """image (3, H, W) in [0, 1]."""
        if self.enabled:
            self.writer.add_image(tag, image, step)
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({tag: wandb.Image(image.permute(1, 2, 0).float().numpy())}, step=step)

    def flush(self):
        if self.enabled:
            self.writer.flush()

    def close(self):
        if self.enabled:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def start_wandb(project: str, name: str | None, config: dict, output_dir):
    """A Weights & Biases run of `project` (wandb's own settings apply: WANDB_MODE, WANDB_DIR, its login).
    wandb is imported here only, so that runs without a project never load it. ValueError when wandb is
    missing or cannot start the run."""
    try:
        import wandb
    except ImportError:
        raise ValueError(f"--wandb_project {project}: wandb is not installed (pip install -r requirements.txt)") \
            from None
    try:
        return wandb.init(project=project, name=name or Path(output_dir).name, config=config)
    except Exception as e:  # wandb's errors (no login, no network) have no common base class
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--wandb_project {project}: wandb could not start a run ({first}); run `wandb login`, "
                         f"or set WANDB_MODE=offline to log locally and `wandb sync` later") from None


def read_metrics(output_dir) -> list[dict]:
    path = Path(output_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
