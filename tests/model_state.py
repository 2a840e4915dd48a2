"""What a model object holds, for tests that it holds no more than it should."""
import torch


def held_bytes(obj) -> int:
    """Bytes of every tensor reachable from a model's attributes (modules, containers, dataclasses)."""
    seen_objects, storages, todo = set(), {}, [obj]
    while todo:
        item = todo.pop()
        if id(item) in seen_objects:
            continue
        seen_objects.add(id(item))
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[storage.data_ptr(), item.device] = storage.nbytes()
        elif isinstance(item, dict):
            todo += list(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            todo += list(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            todo += list(vars(item).values())
    return sum(storages.values())
