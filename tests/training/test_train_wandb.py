"""Weights & Biases beside TensorBoard: main.py --wandb_project logs the training statistics (wandb's
offline mode, its files in the test's folder); without it wandb is never imported."""
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import main
from train_support import FAST_ARGS, REPO, digits_subset, tiny_config
from training.metrics_log import read_metrics


# The offline run file (run-<id>.wandb): a 7-byte file header, then LevelDB's log format (32 KiB
# blocks of records with a 7-byte header: crc32, length, type), each record a protobuf `Record`.
FILE_HEADER, BLOCK, RECORD_HEADER, FULL, LAST = 7, 32768, 7, 1, 4


def history_rows(run_file: Path) -> list[dict]:
    """The `history` records (what run.log wrote) of an offline run file: {key: value, "_step": step}."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, pos, chunks, rows = run_file.read_bytes(), FILE_HEADER, b"", []
    while pos + RECORD_HEADER <= len(data):
        if BLOCK - pos % BLOCK < RECORD_HEADER:  # the rest of a block too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + RECORD_HEADER])
        if kind == 0 and length == 0:
            break
        chunks += data[pos + RECORD_HEADER:pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind in (FULL, LAST):
            record = Record.FromString(chunks)
            chunks = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.fixture(autouse=True)
def _wandb_settings_of_each_test():
    """wandb keeps its settings (the mode among them) in a process-wide singleton from the first run on."""
    yield
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


@pytest.fixture
def args(tmp_path_factory, tiny_dir, tmp_path):
    data = digits_subset(tmp_path_factory, per_class=2)
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **{**FAST_ARGS, "batch_size": 5, "ema": False})
    return ["--config", str(config), "--data_path", str(data), "--output_dir", str(tmp_path / "out")]


def test_wandb_offline_run_holds_the_logged_scalars(args, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    main.main([*args, "--wandb_project", "checkerboard-test", "--wandb_run_name", "tiny"])

    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    logged = [m for m in read_metrics(tmp_path / "out") if "iteration" in m]
    rows = history_rows(next(runs[0].glob("run-*.wandb")))
    assert [row["_step"] for row in rows] == [m["step"] for m in logged] == [1, 2, 3, 4]
    for row, m in zip(rows, logged):
        assert row["train/loss_total"] == pytest.approx(m["loss_total"])
        assert row["train/lr"] == pytest.approx(m["lr"])


def test_without_wandb_project_wandb_is_not_imported(args):
    code = f"import sys, main; main.main({args!r}); print('wandb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_run_name_without_project_is_one_line(args, capsys):
    with pytest.raises(SystemExit) as e:
        main.main([*args, "--wandb_run_name", "tiny"])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wandb_run_name" in err[0] and "--wandb_project" in err[0]


def test_wandb_that_cannot_start_stops_the_run_in_one_line_before_any_write(args, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "online")
    for name in ("WANDB_API_KEY", "WANDB_SILENT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HOME", "WANDB_DIR", "WANDB_CONFIG_DIR"):  # no login of the machine's user is found
        monkeypatch.setenv(name, str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    with pytest.raises(SystemExit) as e:
        main.main([*args, "--wandb_project", "checkerboard-test"])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--wandb_project checkerboard-test" in err[0] and "wandb login" in err[0], err
    out = tmp_path / "out"
    assert not out.exists() or not list(out.iterdir())
