"""torch.distributed set-up for torchrun; every helper degrades to a single process."""
import datetime
import os
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.distributed as dist


DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(name: str | None) -> torch.device:
    """None: the GPU when there is one. A device that is not cpu, cuda or cuda:N of an existing GPU is an
    error (ValueError naming it), never a silent CPU run."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES or (device.type == "cpu" and device.index):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ValueError(f"--device {name} but no CUDA GPU is available (use --device cpu)")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name} but there {'is' if count == 1 else 'are'} only {count} GPU(s) "
                             f"(cuda:0..cuda:{count - 1})")
    return device


def init_distributed(device: str | None = None, timeout: datetime.timedelta | None = None
                     ) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun: NCCL on GPUs, gloo on CPU. `timeout`: how long a
    collective (a barrier) may wait, where the others wait for longer work of process 0 than
    torch's default allows (None: torch's default)."""
    device = resolve_device(device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    kwargs = {} if timeout is None else {"timeout": timeout}
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank), **kwargs)
        return rank, world, torch.device("cuda", local_rank)
    dist.init_process_group("gloo", **kwargs)
    return rank, world, torch.device("cpu")


class Placement(NamedTuple):
    """Where a process works: its rank, the number of processes and its device."""
    rank: int
    world: int
    device: torch.device


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun), known before the processes are joined."""
    return int(os.environ["RANK"]) if "RANK" in os.environ and "WORLD_SIZE" in os.environ else 0


@contextmanager
def start_processes(device_name: str | None):
    """The processes torchrun launched joined into one group (NCCL or gloo by `device_name`'s type) for
    the block, and the group ended after it; nothing to do where no processes were launched or the group
    exists already (a caller that made it ends it)."""
    started = False
    if not is_distributed():
        init_distributed(resolve_device(device_name).type)
        started = is_distributed()
    try:
        yield
    finally:
        if started:
            cleanup()


def placement(device_name: str | None) -> Placement:
    """This process's place among those started (one process on `device_name`'s type of device when
    none were); under torchrun the GPU of its local rank."""
    device = resolve_device(device_name)
    if not is_distributed():
        return Placement(0, 1, torch.device(device.type))
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return Placement(get_rank(), get_world_size(), device)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def barrier():
    if is_distributed():
        dist.barrier()


def broadcast_object(obj):
    """Process 0's `obj` (picklable) on every process."""
    if is_distributed():
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]
    return obj


def agree(check):
    """`check()` on process 0, its result on every process; its ValueError or OSError is raised on
    every process (the others would otherwise wait for process 0 at the next collective)."""
    result, error = None, None
    if get_rank() == 0:
        try:
            result = check()
        except (ValueError, OSError) as e:
            error = e
    result, error = broadcast_object((result, error))
    if error is not None:
        raise error
    return result


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        t = t.clone()
        dist.all_reduce(t)
        t /= get_world_size()
    return t


def cleanup():
    if is_distributed():
        dist.destroy_process_group()
