"""Two CPU processes with the gloo backend train as one: same weights on both ranks after the steps."""
import os
import socket
from dataclasses import asdict

import pytest
import torch
import torch.multiprocessing as mp

from common.distributed import start_processes
from train_support import FAST_ARGS, digits_subset, tiny_config
from training.metrics_log import read_metrics
from training.config import TrainConfig
from training.engine import fit, setup
from training.token_cache import create_cache

WORLD = 2


def _worker(rank: int, port: int, config: dict, out):
    torch.set_num_threads(1)  # two processes share the two cores
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    with start_processes(config["device"]):
        run = setup(TrainConfig(**config))
        trainable = {name: p for name, p in run.model.named_parameters() if p.requires_grad}
        initial = {name: p.detach().clone() for name, p in trainable.items()}
        fit(run)
        final = {name: p.detach().clone() for name, p in trainable.items()}
        torch.save({"initial": initial, "final": final, "items": len(run.sampler)}, out / f"rank{rank}.pt")
        run.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("grad_checkpointing", [False, True])
def test_two_gloo_processes_hold_the_same_weights(tmp_path_factory, tiny_dir, tmp_path, grad_checkpointing):
    data = digits_subset(tmp_path_factory, per_class=2)
    path = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **{**FAST_ARGS, "batch_size": 5, "epochs": 2})
    config = TrainConfig.load(path, data_path=str(data), cache_path=str(tmp_path / "cache"), use_cache=True,
                              output_dir=str(tmp_path / "out"), grad_checkpointing=grad_checkpointing)
    create_cache(config)
    mp.spawn(_worker, args=(_free_port(), asdict(config), tmp_path), nprocs=WORLD, join=True)

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert [r["items"] for r in ranks] == [10, 10]  # 20 images split between the two processes
    for name, value in ranks[0]["final"].items():
        assert torch.equal(value, ranks[1]["final"][name]), name
    assert any(not torch.equal(ranks[0]["initial"][n], ranks[0]["final"][n]) for n in ranks[0]["final"])
    steps = [m for m in read_metrics(tmp_path / "out") if "iteration" in m]
    assert [(m["epoch"], m["iteration"]) for m in steps] == [(0, 1), (0, 2), (1, 1), (1, 2)]  # rank 0 writes
    assert (tmp_path / "out" / "checkpoint-1.pth").is_file()
