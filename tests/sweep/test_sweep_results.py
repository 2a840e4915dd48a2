"""sweep/results.py and sweep/report.py on hand-made rows: the 2% rule, the best-guidance table, the results
files and the plots."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from sweep import report
from sweep import results as sr

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(cfg, fid, is_, checkpoint="ckpt/L-2x", ratio=2, steps=4, total=17, n=1000, features="inception", **extra):
    keys = {"inception": ("fid", "sfid", "inception_score", "precision", "recall"),
            "digits": ("digits_fid", "digits_sfid", "digits_is", "digits_precision", "digits_recall")}[features]
    metrics = dict(zip(keys, (fid, 1.5 * fid, is_, 0.7, 0.5)))
    return dict(checkpoint=checkpoint, ratio=ratio, steps_per_scale=steps, total_steps=total, cfg=cfg,
                cfg_start_step=5, temperature=1.0, num_samples=n, **metrics, seconds=3.0, **extra)


def test_near_best_is_the_runs_within_two_percent_of_the_lowest_fid():
    # lowest FID 10.0: 10.19 and 10.1 lie within 2% (<= 10.2), 10.25 and 12 do not
    runs = [run(1.0, 10.19, 120), run(1.1, 10.0, 100), run(1.2, 10.25, 200), run(1.3, 12.0, 300), run(1.4, 10.1, 110)]
    near = sr.near_best(runs, "inception")
    assert near["fid_min"] == 10.0 and near["runs"] == 3 and near["cfgs"] == [1.0, 1.1, 1.4]
    assert near["is_mean"] == pytest.approx(110) and near["is_min"] == 100 and near["is_max"] == 120
    # a run exactly at the bound counts; 3% takes in 10.25 as well
    assert sr.near_best([run(1.0, 50.0, 1), run(1.1, 51.0, 3)], "inception")["runs"] == 2
    wider = sr.near_best(runs, "inception", tolerance=0.03)
    assert wider["cfgs"] == [1.0, 1.1, 1.2, 1.4] and wider["is_mean"] == pytest.approx(132.5)
    # the digits network's keys, not Inception's
    digits = [run(1.0, 2.0, 9.0, features="digits"), run(1.5, 2.03, 8.0, features="digits")]
    assert sr.near_best(digits, "digits")["is_mean"] == pytest.approx(8.5)
    with pytest.raises(KeyError):
        sr.near_best(digits, "inception")


def hand_made_rows():
    return [
        run(1.0, 8.0, 150), run(1.5, 6.0, 200), run(2.0, 6.1, 260),  # L-2x, 4 steps: best 1.5, 2.0 near
        run(1.0, 12.0, 100, steps=1, total=5), run(1.5, 11.0, 120, steps=1, total=5),  # L-2x, 1 step
        run(1.0, 7.0, 170, checkpoint="ckpt/S-4x", ratio=4, steps=8, total=17),
        run(1.5, 7.1, 190, checkpoint="ckpt/S-4x", ratio=4, steps=8, total=17),
        run(1.5, 9.0, 140, checkpoint="ckpt/S-single", ratio="single", steps=[8], total=8),  # a per-scale list
    ]


def test_the_best_guidance_per_setting_and_its_near_best_spread():
    table = sr.best_per_setting(hand_made_rows(), "inception")
    assert [(t["checkpoint"], t["steps_per_scale"]) for t in table] == [
        ("ckpt/L-2x", 4), ("ckpt/L-2x", 1), ("ckpt/S-4x", 8), ("ckpt/S-single", "8")]
    first = table[0]
    assert first["runs"] == 3 and first["best_cfg"] == 1.5 and first["fid"] == 6.0 and first["sfid"] == 9.0
    assert first["inception_score"] == 200 and first["near_best_runs"] == 2 and first["near_best_cfgs"] == "1.5,2"
    assert (first["inception_score_near_best_mean"], first["inception_score_near_best_min"],
            first["inception_score_near_best_max"]) == (230, 200, 260)
    assert table[1]["best_cfg"] == 1.5 and table[1]["near_best_runs"] == 1
    assert table[2]["best_cfg"] == 1.0 and table[2]["inception_score_near_best_mean"] == 180


def test_results_files_hold_every_row(tmp_path):
    rows = hand_made_rows()
    for i, row in enumerate(rows):
        all_rows = sr.append_row(tmp_path, {**row, "seed": i} if i == 2 else row, "inception")
        assert len(all_rows) == i + 1
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored == sr.read_rows(tmp_path) and len(stored) == len(rows)
    assert stored[-1]["steps_per_scale"] == "8" and stored[2]["seed"] == 2  # a list as text; extra columns kept
    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:9] == ["checkpoint", "ratio", "steps_per_scale", "total_steps", "cfg", "cfg_start_step",
                                  "temperature", "num_samples", "inception_score"]
    assert list(table[0])[-2:] == ["seconds", "seed"] and table[2]["seed"] == "2" and table[0]["seed"] == ""
    assert [float(r["fid"]) for r in table] == [r["fid"] for r in rows]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert sr.find_row(stored, rows[1]) == rows[1]
    assert sr.find_row(stored, {**rows[-1], "steps_per_scale": [8]})["fid"] == 9.0
    assert sr.find_row(stored, {**rows[1], "cfg": 1.6}) is None


@pytest.mark.parametrize("change, fragment", [
    (dict(fid=float("nan")), "fid must be a finite number, got nan"),
    (dict(cfg="1.5"), "cfg must be a finite number"),
    (dict(digits_fid=3.0), "lacks fid"),
])
def test_a_bad_row_changes_no_file(tmp_path, change, fragment):
    sr.append_row(tmp_path, run(1.0, 8.0, 150), "inception")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    row = run(1.5, 6.0, 200)
    if "digits_fid" in change:
        del row["fid"]
    with pytest.raises(ValueError, match=fragment):
        sr.append_row(tmp_path, {**row, **{k: v for k, v in change.items() if k != "digits_fid"}}, "inception")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _is_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


@pytest.mark.parametrize("features", ["inception", "digits"])
def test_report_writes_the_table_and_the_plots(tmp_path, features):
    rows = [run(r["cfg"], r["fid"], r["inception_score"], r["checkpoint"], r["ratio"], r["steps_per_scale"],
                r["total_steps"], features=features) for r in hand_made_rows()]
    paths = report.write_report(tmp_path, rows, features)
    assert sorted(p.name for p in paths) == sorted(["best_guidance.md", "best_guidance.csv", "fid_vs_is.png",
                                                    "by_steps_per_scale.png", "by_total_steps.png"])
    for name in ("fid_vs_is.png", "by_steps_per_scale.png", "by_total_steps.png"):
        width, height = _is_png(tmp_path / name)
        assert width > 600 and height > 400
    markdown = (tmp_path / "best_guidance.md").read_text()
    header = markdown.splitlines()[2]
    if features == "digits":
        assert "| Digits FID | Digits sFID | Digits IS |" in header and "Inception" not in markdown
        assert "| FID |" not in header and "digits-classifier features" in markdown
    else:
        assert "| FID | sFID | Inception Score |" in header
    assert markdown.count("\n| ckpt/") == 4 and "| 1.50 | 6.00 | 9.00 |" in markdown
    with open(tmp_path / "best_guidance.csv", newline="") as f:
        table = list(csv.DictReader(f))
    key = "digits_is" if features == "digits" else "inception_score"
    assert float(table[0][f"{key}_near_best_mean"]) == 230 and table[0]["near_best_cfgs"] == "1.5,2"
    assert report.write_report(tmp_path / "none", [], features) == []


def test_plots_change_with_the_numbers(tmp_path):
    rows = hand_made_rows()
    report.plot_by_steps(rows, tmp_path / "a.png", "inception")
    rows[1]["inception_score"] = 150  # the near-best IS of the first setting moves
    report.plot_by_steps(rows, tmp_path / "b.png", "inception")
    a, b = (np.asarray(Image.open(tmp_path / n).convert("RGB")) for n in ("a.png", "b.png"))
    assert a.shape == b.shape and (a != b).any()
