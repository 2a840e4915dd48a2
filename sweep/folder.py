"""A sweep's folder: which sweep it belongs to, and what a new start finds there.

    sweep.json              the settings every point shares, the models with their checkpoints'
                            SHA-256, and each grid asked for (appended when a command asks for another)
    results.json/.csv, best_guidance.md/.csv, fid_vs_is.png, by_steps_per_scale.png, by_total_steps.png
                            sweep/results.py's and sweep/report.py's files, rewritten after every point
    reference_cache/        the reference's statistics, by its content and the feature network
    points/<model>/<point>/ each point's sampling run (sampling/folder.py)

A folder belongs to one sweep. The settings every point shares (reference and its content, feature
network, guidance start, temperature, seed, EMA, precision, shard size, the device of the random
streams) must be those it was started with: a command with another is refused, naming the first
that differs, before anything is written. The grid may grow: another command into the folder with
the same settings adds its models, weights, steps and counts, and every point evaluated before is
kept and skipped. A model whose checkpoint changed since it was swept is refused (its new rows
would mix two sets of weights). A folder holding these names without a sweep.json is not a
sweep's, and is refused. Only the process holding the folder's run_lock calls `start`.
"""
import datetime
import json
from pathlib import Path

from common.files import atomic_write_text, remove_temporaries
from common.json_files import read_json
from sweep import report
from sweep import results as sr
from sweep.points import POINTS_DIR, model_label

RECORD_NAME = "sweep.json"
REFERENCE_CACHE = "reference_cache"
OWN_NAMES = (sr.RESULTS_JSON, sr.RESULTS_CSV, report.BEST_MD, report.BEST_CSV, report.FID_VS_IS,
             report.BY_STEPS_PER_SCALE, report.BY_TOTAL_STEPS, REFERENCE_CACHE, POINTS_DIR)


class SweepFolder:
    def __init__(self, path):
        self.path = Path(path)
        self.record_path = self.path / RECORD_NAME
        self.reference_cache = self.path / REFERENCE_CACHE

    def read_record(self) -> dict | None:
        if not self.record_path.is_file():
            return None
        return read_json(self.record_path, dict, "a sweep's record")

    def check(self, settings: dict, checkpoints: list[dict]) -> None:
        """Refuses a folder of another sweep, of no sweep, or with a changed checkpoint; writes nothing."""
        record = self.read_record()
        if record is None:
            foreign = [self.path / n for n in OWN_NAMES if (self.path / n).exists()]
            if foreign:
                raise ValueError(f"{foreign[0]} is there but no {RECORD_NAME}: it is not a sweep's folder; use "
                                 f"another --output_dir")
            return
        written = record.get("settings", {})
        for key in sorted(set(settings) | set(written)):
            if written.get(key) != settings.get(key):
                raise ValueError(f"{self.record_path}: this sweep's points were drawn and scored with "
                                 f"{key}={written.get(key)!r}, this command has {key}={settings.get(key)!r}; use "
                                 f"another --output_dir")
        known = {c["path"]: c for c in record.get("checkpoints", [])}
        for c in checkpoints:
            old = known.get(c["path"])
            if old is not None and old["sha256"] != c["sha256"]:
                raise ValueError(f"{c['path']} has changed since this sweep evaluated it (SHA-256 "
                                 f"{old['sha256'][:12]}, now {c['sha256'][:12]}): its new points would mix two sets "
                                 f"of weights; use another --output_dir")

    def start(self, settings: dict, checkpoints: list[dict], grid: dict) -> list[dict]:
        """`check`, then removes an interrupted run's temporaries and records the settings, the new
        models and the grid. Returns each checkpoint's entry as the record keeps it: its `name` (the
        path first given to the sweep: the rows' checkpoint column) and `label` (its folder under points/)."""
        self.check(settings, checkpoints)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_temporaries(self.path)
        record = self.read_record() or {"settings": settings, "checkpoints": [], "grids": []}
        known = {c["path"]: c for c in record["checkpoints"]}
        for c in checkpoints:
            if c["path"] not in known:
                entry = {"name": c["given"], "path": c["path"], "sha256": c["sha256"], "ratio": c["ratio"],
                         "label": model_label(len(record["checkpoints"]), c["path"])}
                record["checkpoints"].append(entry)
                known[c["path"]] = entry
        if not record["grids"] or {k: v for k, v in record["grids"][-1].items() if k != "date"} != grid:
            record["grids"].append({**grid, "date": datetime.datetime.now().isoformat(timespec="seconds")})
        atomic_write_text(self.record_path, json.dumps(record, indent=1))
        return [known[c["path"]] for c in checkpoints]
