"""A sampling run's folder: what it holds, which run it belongs to, what a new start finds there.

    sampling.json          the settings that fix the samples and the files asked for; written before
                           the first shard, kept after the run
    shards/shard_A_B.npz   samples A..B-1, drawn and not yet packed (removed once samples.npz is whole)
    samples.npz            the ADM batch; grid.png and the figures asked for

A folder belongs to one run. A start with other settings is refused, naming the first that differs
(a checkpoint file replaced under its name is another checkpoint: its SHA-256 is recorded),
before anything is written; so is a folder that holds one of these names without a sampling.json
(the user's files, or another tool's). The same settings resume: finished shards are kept, and a
finished run (samples.npz there) is not drawn again. Only the process holding the folder's run_lock
(common/files.py) calls `start`, so the temporary files it removes are an interrupted run's.
"""
import json
from pathlib import Path

from common.files import atomic_write_text, remove_temporaries
from common.json_files import read_json
from sampling import sample_io
from sampling.config import SampleConfig
from sampling.plan import SamplePlan

RECORD_NAME = "sampling.json"
CHECKPOINT_SHA256 = "checkpoint_sha256"
SHARDS_NAME = "shards"
SAMPLES_NAME = "samples.npz"
GRID_NAME = "grid.png"
FIGURE_NAMES = {"pyramid": "pyramid.png", "fill": "checkerboard_fill.png", "step_maps": "step_entropy_maps.png",
                "entropy_plot": "entropy_per_step.png", "entropy_stats": "entropy_per_step.json"}
FIGURE_FLAGS = {"pyramid": "save_pyramid", "fill": "save_fill", "step_maps": "save_step_maps",
                "entropy_plot": "save_entropy_plot", "entropy_stats": "save_entropy_plot"}


def run_record(config: SampleConfig, plan: SamplePlan, device, checkpoint_sha256: str | None) -> dict:
    """What fixes the folder's files: the plan, the weights (by the checkpoint's path and its file's
    SHA-256: a file replaced under the same name is another model), the random streams' device and the
    files asked for (not the batch size, the compilation or the number of processes)."""
    checkpoint = str(Path(config.checkpoint).resolve()) if config.checkpoint else None
    return {"checkpoint": checkpoint, CHECKPOINT_SHA256: checkpoint_sha256, "use_ema": config.use_ema, "precision": config.precision, **plan.as_dict(),
            "generator_device": device.type, "shard_size": config.shard_size, "grid_samples": config.grid_samples,
            "vis_samples": config.vis_samples, **{flag: getattr(config, flag) for flag in set(FIGURE_FLAGS.values())}}


class SamplingFolder:
    """A sampling run's folder: its file names, its record (sampling.json) and the refusal of a folder
    of another run. Not a lock (training/run_folder.py's RunFolder is one): sample() holds run_lock."""

    def __init__(self, path):
        self.path = Path(path)
        self.record_path = self.path / RECORD_NAME
        self.shard_dir = self.path / SHARDS_NAME
        self.samples_npz = self.path / SAMPLES_NAME
        self.grid_png = self.path / GRID_NAME

    def figures(self, config: SampleConfig) -> dict:
        """name -> path of each figure file the config asks for."""
        return {name: self.path / file for name, file in FIGURE_NAMES.items() if getattr(config, FIGURE_FLAGS[name])}

    def outputs(self, config: SampleConfig) -> list[Path]:
        return [self.samples_npz, self.grid_png, *self.figures(config).values()]

    def start(self, record: dict) -> None:
        """Removes an interrupted run's temporaries, refuses a folder of another run (or of no run),
        and writes the record of a new one."""
        for folder in (self.path, self.shard_dir):
            if folder.is_dir():
                remove_temporaries(folder)
        if self.record_path.is_file():
            written = self.read_record()
            for key in sorted(set(record) | set(written)):
                if key == CHECKPOINT_SHA256 and written.get(key) != record.get(key):
                    raise ValueError(self._changed_checkpoint(record, written.get(key)))
                if written.get(key) != record.get(key):
                    raise ValueError(f"{self.record_path}: this folder's samples were drawn with "
                                     f"{key}={written.get(key)!r}, this run has {key}={record.get(key)!r}; use "
                                     f"another --output_dir")
            return
        ours = [self.shard_dir, self.samples_npz, self.grid_png, *(self.path / name for name in FIGURE_NAMES.values())]
        foreign = [p for p in ours if p.exists()]
        if foreign:
            raise ValueError(f"{foreign[0]} is there but no {RECORD_NAME}: it is not a sampling run's; use another "
                             f"--output_dir")
        atomic_write_text(self.record_path, json.dumps(record, indent=1, sort_keys=True))

    def _changed_checkpoint(self, record: dict, drawn_with: str | None) -> str:
        now = f"{record['checkpoint']} has SHA-256 {str(record[CHECKPOINT_SHA256])[:12]}"
        if drawn_with is None:
            return (f"{self.record_path} records no {CHECKPOINT_SHA256} (an older version drew these samples) and "
                    f"{now}: its new samples could mix two models in one {SAMPLES_NAME}; use another --output_dir")
        return (f"{self.record_path}: this folder's samples were drawn from a checkpoint of SHA-256 "
                f"{str(drawn_with)[:12]}, but {now} (the file was replaced): its new samples would mix two models "
                f"in one {SAMPLES_NAME}; use another --output_dir")

    def read_record(self) -> dict:
        return read_json(self.record_path, dict, "a sampling run's record (a JSON object of its settings)")

    def remove_shards(self, ranges) -> None:
        """The packed shards, then their folder if nothing else is in it."""
        for lo, hi in ranges:
            sample_io.shard_path(self.shard_dir, lo, hi).unlink(missing_ok=True)
        if self.shard_dir.is_dir() and not any(self.shard_dir.iterdir()):
            self.shard_dir.rmdir()
