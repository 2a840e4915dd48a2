"""Training records of process 0: TensorBoard scalars and images, plus metrics.jsonl for scripts."""
import json
from pathlib import Path

import torch

from common.files import naming_file
from common.tensorboard_writer import summary_writer

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Does nothing where `enabled` is false (processes other than 0)."""

    def __init__(self, output_dir, enabled: bool = True, tensorboard_dir=None):
        self.enabled = enabled
        self.path = Path(output_dir) / METRICS_FILE
        tensorboard_dir = tensorboard_dir or Path(output_dir) / "tensorboard"
        self.writer = summary_writer(tensorboard_dir) if enabled else None

    def scalars(self, values: dict, step: int, prefix: str = "train"):
        if not self.enabled:
            return
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def record(self, entry: dict):
        if not self.enabled:
            return
        with naming_file(self.path), open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def image(self, tag: str, image: torch.Tensor, step: int):
        """image (3, H, W) in [0, 1]."""
        if self.enabled:
            self.writer.add_image(tag, image, step)

    def flush(self):
        if self.enabled:
            self.writer.flush()

    def close(self):
        if self.enabled:
            self.writer.close()


def read_metrics(output_dir) -> list[dict]:
    path = Path(output_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
