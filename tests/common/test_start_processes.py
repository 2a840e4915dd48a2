"""The processes torchrun launched are joined in one place (common.distributed.start_processes, which
training's train() enters): the group it makes ends with its block, one that exists already is left to
its maker, and without torchrun there is one process on the device asked for."""
import socket

import torch

from common.distributed import is_distributed, placement, start_processes


def _torchrun_environment(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                            MASTER_PORT=str(port)).items():
        monkeypatch.setenv(name, value)


def test_the_group_made_for_a_block_ends_with_it_and_an_existing_one_is_left(monkeypatch):
    _torchrun_environment(monkeypatch)
    with start_processes("cpu"):
        assert is_distributed()
        assert placement("cpu") == (0, 1, torch.device("cpu"))
        with start_processes("cpu"):  # setup called inside train: the group is train's
            pass
        assert is_distributed()
    assert not is_distributed()


def test_without_torchrun_there_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with start_processes("cpu"):
        assert not is_distributed()
        assert placement("cpu") == (0, 1, torch.device("cpu"))
