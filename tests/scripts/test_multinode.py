"""Multi-node training and sampling as users launch them: two torchrun "nodes" of one process each
(--nnodes 2, --node_rank 0/1, c10d rendezvous on 127.0.0.1, gloo on the CPU), so that the second node's process
has LOCAL_RANK 0 but RANK 1. The data is split across all processes, only global rank 0 writes, a
second launch with --resume (through slurm/torchrun.sbatch) continues the run, and FID sampling's
shards are split disjointly and completely. tests/torchrun_probe.py records each process's share."""
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import numpy as np

from sampling.folder import GRID_NAME, RECORD_NAME, SAMPLES_NAME
from train_support import FAST_ARGS, digits_subset, tiny_config
from training.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "tests" / "torchrun_probe.py"
NODES = 2
LAUNCH_TIMEOUT_S = 120  # a hung rendezvous or collective fails the test instead of blocking CI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# SLURM's commands as slurm/torchrun.sbatch uses them, for a job of NODES nodes on this machine: srun
# runs its command once per node, all at once, and fails if one does.
FAKE_SRUN = """#!/usr/bin/env bash
pids=()
for node in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$node "$@" & pids+=($!); done
for pid in "${pids[@]}"; do wait "$pid" || exit 1; done
"""
FAKE_SCONTROL = "#!/usr/bin/env bash\necho 127.0.0.1\n"


def torchrun_nodes(port: int, probe_args: list) -> list[list]:
    """What a user types on each node: `torchrun --nnodes 2 --node_rank r ...` for r = 0, 1."""
    return [["torchrun", "--nnodes", str(NODES), "--node_rank", str(rank), "--nproc_per_node", "1",
             "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--max_restarts", "0", *probe_args]
            for rank in range(NODES)]


def launch(script: str, args: list, workdir: Path, probe_dir: Path, sbatch: bool = False) -> list[dict]:
    """`script args` on two nodes, each running torchrun (sbatch: through slurm/torchrun.sbatch, with
    srun and scontrol standing in for SLURM's); each process's record."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROBE_DIR": str(probe_dir), "OMP_NUM_THREADS": "1"}
    probe_args = [str(PROBE), script, *map(str, args)]
    if sbatch:
        bin_dir = probe_dir / "bin"
        bin_dir.mkdir(exist_ok=True)
        for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", SLURM_NNODES=str(NODES), SLURM_JOB_ID="1",
                   SLURM_JOB_NODELIST="node[1-2]", GPUS_PER_NODE="1", MASTER_PORT=str(port))
        commands = [["bash", str(REPO / "slurm" / "torchrun.sbatch"), *probe_args]]
    else:
        commands = torchrun_nodes(port, probe_args)
    nodes = [subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)  # its own group: a timeout kills the workers too
             for command in commands]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=LAUNCH_TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for node in nodes:
            os.killpg(node.pid, signal.SIGKILL)
        raise AssertionError(f"{script} on {NODES} nodes did not finish in {LAUNCH_TIMEOUT_S} s") from None
    for node, out in zip(nodes, outputs):
        assert node.returncode == 0, out[-3000:]
    records = [json.loads((probe_dir / f"rank{r}-{Path(script).stem}.json").read_text()) for r in range(NODES)]
    # node 1's process is global rank 1 but local rank 0: what a LOCAL_RANK-for-RANK mistake would confuse
    assert [(r["RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"]) for r in records] == [("0", "0", "2"), ("1", "0", "2")]
    return records


def _split(records: list[dict], key: str, epoch: str | None = None) -> list[list]:
    return [r[key][epoch] if epoch else r[key] for r in records]


def test_two_nodes_train_resume_and_sample(tmp_path_factory, tiny_dir, tmp_path):
    data = digits_subset(tmp_path_factory, per_class=2)  # 20 images
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **{**FAST_ARGS, "batch_size": 5, "ema": False})
    out, probe = tmp_path / "run", tmp_path / "probe"
    probe.mkdir()

    records = launch("main.py", ["--config", config, "--data_path", data, "--output_dir", out], tmp_path, probe)
    shares = _split(records, "items", "0")
    assert sorted(shares[0] + shares[1]) == list(range(20))  # disjoint and complete: 10 images each
    assert [len(s) for s in shares] == [10, 10]
    # Only global rank 0 wrote: one TensorBoard file, each iteration logged once, nothing in the working folder.
    assert len(list((out / "tensorboard").iterdir())) == 1
    assert [(m["epoch"], m["iteration"]) for m in read_metrics(out) if "iteration" in m] == [(0, 1), (0, 2)]
    assert sorted(p.name for p in out.iterdir()) == ["args.yaml", "autoenc", "checkpoint-0.pth",
                                                     "checkpoint-last.pth", "config.yaml", "metrics.jsonl",
                                                     "tensorboard"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe", "run", "tiny.yaml"]
    assert sorted(p.name for p in probe.iterdir()) == ["rank0-main.json", "rank1-main.json"]

    records = launch("main.py", ["--resume", out, "--epochs", "2"], tmp_path, probe, sbatch=True)
    assert [list(r["items"]) for r in records] == [["1"], ["1"]]  # epoch 0 was not trained again
    shares = _split(records, "items", "1")
    assert sorted(shares[0] + shares[1]) == list(range(20))
    assert [(m["epoch"], m["iteration"]) for m in read_metrics(out) if "iteration" in m] == [
        (0, 1), (0, 2), (1, 1), (1, 2)]
    assert len(list((out / "tensorboard").iterdir())) == 2  # one per launch, both rank 0's

    samples = tmp_path / "fid"
    records = launch("main_sample.py", ["--checkpoint", out, "--fid", "--num_samples", 20, "--shard_size", 3,
                                        "--batch_size", 4, "--steps_per_scale", 1, "--cfg_start_step", 1,
                                        "--device", "cpu", "--output_dir", samples], tmp_path, probe)
    shards = _split(records, "shards")
    assert shards == [[[0, 3], [6, 9], [12, 15], [18, 20]], [[3, 6], [9, 12], [15, 18]]]
    assert sorted(p.name for p in samples.iterdir()) == sorted([GRID_NAME, RECORD_NAME, SAMPLES_NAME])
    with np.load(samples / SAMPLES_NAME) as npz:
        assert npz["arr_0"].shape[0] == 20
        assert npz["arr_1"].tolist() == [i % 10 for i in range(20)]
