"""torch.distributed set-up for torchrun; every helper degrades to a single process."""
import os

import torch
import torch.distributed as dist


def init_distributed(device: str = "cuda") -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun: NCCL on GPUs, gloo on CPU."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, torch.device(device if device != "cuda" or torch.cuda.is_available() else "cpu")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device == "cuda" and torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        return rank, world, torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return rank, world, torch.device("cpu")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier():
    if is_distributed():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        t = t.clone()
        dist.all_reduce(t)
        t /= get_world_size()
    return t


def cleanup():
    if is_distributed():
        dist.destroy_process_group()
