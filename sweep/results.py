"""The results of a guidance sweep: one row per evaluated point, the best guidance per setting, the 2% rule.

A row is a dict: the point (RUN_COLUMNS: checkpoint, ratio, steps_per_scale, total_steps, cfg,
cfg_start_step, temperature, num_samples), its five metrics under the keys of the feature network
that scored them (evaluation/features.py: `fid`, `inception_score`, ... or `digits_fid`,
`digits_is`, ...), `seconds`, and any further columns the sweep adds. A per-scale list of steps
is written as its comma-separated text.

A setting is a point without its guidance weight (SETTING_COLUMNS); the paper sweeps the weight in
0.1 increments for every setting and keeps the lowest FID (Table 1, Fig. 4a). Fig. 5 plots, for each
setting, the runs whose FID is within 2% (relative) of the setting's lowest: their mean, min and
max IS (`near_best`).

The rows' files in the sweep folder, each rewritten whole and atomically from the full row list:
  results.json, results.csv       every row (the JSON is what `read_rows` reads back)
The table and plots made from them are sweep/report.py's.
"""
import csv
import io
import json
import math
from numbers import Real
from pathlib import Path

from common.files import atomic_write_text
from common.json_files import read_json
from evaluation.features import metric_key, metric_keys

SETTING_COLUMNS = ("checkpoint", "ratio", "steps_per_scale", "total_steps", "cfg_start_step", "temperature",
                   "num_samples")
RUN_COLUMNS = SETTING_COLUMNS[:4] + ("cfg",) + SETTING_COLUMNS[4:]
NEAR_BEST = 0.02  # the paper's Fig. 5: runs within 2% (relative) of the lowest FID
RESULTS_JSON, RESULTS_CSV = "results.json", "results.csv"


# ---------------------------------------------------------------- rows and their files


def _number(row, key, where):
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be a finite number, got {value!r}")
    return value


def check_row(row: dict, features: str, where: str = "row") -> dict:
    """The row with its per-scale steps as text; ValueError naming a missing or non-numeric column."""
    missing = [k for k in (*RUN_COLUMNS, *metric_keys(features), "seconds") if k not in row]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    for key in ("total_steps", "cfg", "cfg_start_step", "temperature", "num_samples", "seconds",
                *metric_keys(features)):
        _number(row, key, where)
    row = dict(row)
    if isinstance(row["steps_per_scale"], (list, tuple)):
        row["steps_per_scale"] = ",".join(str(s) for s in row["steps_per_scale"])
    return row


def checked_rows(rows, features: str) -> list:
    return [check_row(row, features, f"row {i}") for i, row in enumerate(rows)]


def _ordered_columns(rows, features):
    known = (*RUN_COLUMNS, *metric_keys(features), "seconds")
    extra = [k for row in rows for k in row if k not in known]
    return list(known) + list(dict.fromkeys(extra))


def csv_text(rows, columns) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row.get(k, "") for k in columns} for row in rows)
    return out.getvalue()


def read_rows(folder) -> list:
    """The rows of results.json in `folder` ([] when there is none yet)."""
    path = Path(folder) / RESULTS_JSON
    if not path.is_file():
        return []
    rows = read_json(path, list, "a list of rows")
    if not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path} is not a list of rows")
    return rows


def write_rows(folder, rows, features: str) -> list:
    """results.json and results.csv from the full row list, each replaced atomically."""
    rows = checked_rows(rows, features)
    folder = Path(folder)
    atomic_write_text(folder / RESULTS_JSON, json.dumps(rows, indent=1) + "\n")
    atomic_write_text(folder / RESULTS_CSV, csv_text(rows, _ordered_columns(rows, features)))
    return rows


def append_row(folder, row: dict, features: str) -> list:
    """Add one evaluated point to the results files; returns every row."""
    row = check_row(row, features, "the new row")
    return write_rows(folder, read_rows(folder) + [row], features)


def values_of(row, columns) -> tuple:
    """The row's values of `columns`: the key of its setting, point or line."""
    return tuple(row[c] for c in columns)


def find_row(rows, point: dict):
    """The row of an evaluated point (its RUN_COLUMNS, per-scale steps as a list or text), or None: a
    resumed sweep skips the points it finds."""
    steps = point["steps_per_scale"]
    wanted = {**point, "steps_per_scale": ",".join(map(str, steps)) if isinstance(steps, (list, tuple)) else steps}
    key = values_of(wanted, RUN_COLUMNS)
    return next((row for row in rows if values_of(row, RUN_COLUMNS) == key), None)


# ---------------------------------------------------------------- best guidance and the 2% rule


def group(rows, columns) -> dict:
    """Rows by the values of `columns`, in the order the groups first appear."""
    groups = {}
    for row in rows:
        groups.setdefault(values_of(row, columns), []).append(row)
    return groups


def near_best(runs, features: str, tolerance: float = NEAR_BEST) -> dict:
    """The paper's rule for one setting: of its runs (one per guidance weight), those whose FID is
    within `tolerance` (relative) of the lowest; their number, weights, and mean, min and max IS."""
    fid, is_ = metric_key(features, "fid"), metric_key(features, "is")
    lowest = min(r[fid] for r in runs)
    near = [r for r in runs if r[fid] <= lowest * (1 + tolerance)]
    scores = [r[is_] for r in near]
    return {"fid_min": lowest, "runs": len(near), "cfgs": [r["cfg"] for r in near],
            "is_mean": sum(scores) / len(scores), "is_min": min(scores), "is_max": max(scores)}


def best_per_setting(rows, features: str, tolerance: float = NEAR_BEST) -> list:
    """One summary per setting: its columns, the number of runs, the guidance with the lowest FID
    and that run's metrics, and `near_best`'s IS (columns `<IS key>_near_best_mean/_min/_max`)."""
    fid, is_ = metric_key(features, "fid"), metric_key(features, "is")
    table = []
    for runs in group(checked_rows(rows, features), SETTING_COLUMNS).values():
        best = min(runs, key=lambda r: r[fid])
        near = near_best(runs, features, tolerance)
        table.append({**{c: best[c] for c in SETTING_COLUMNS}, "runs": len(runs), "best_cfg": best["cfg"],
                      **{k: best[k] for k in metric_keys(features)}, "near_best_runs": near["runs"],
                      "near_best_cfgs": ",".join(f"{c:g}" for c in near["cfgs"]),
                      f"{is_}_near_best_mean": near["is_mean"], f"{is_}_near_best_min": near["is_min"],
                      f"{is_}_near_best_max": near["is_max"]})
    return table
