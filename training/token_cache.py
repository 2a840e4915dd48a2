"""Token cache: the code indices of every image's ten crops at every scale, encoded once.

Layout of a cache folder:
  metadata.json          what the cache was made for (image size, scales, crop, autoencoder hash),
                         the class names, the shard plan and, once complete, per-shard counts
  shard-00000.safetensors  `codes_<s>` int16 (n, 10, s, s) per scale s, `labels` int64 (n,),
                         `indices` int64 (n,) image index in the ImageFolder; its header metadata
                         lists the images of its range that could not be decoded
Shards are written atomically (common/files.py), so an interrupted run resumes with the
first missing shard. Training draws one of the ten crops per image and epoch: an epoch over the
cache is one pass over the images, not ten.
"""
import bisect
import hashlib
import json
import logging
import math
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from models.checkpoint import build_generator
from training.config import TrainConfig
from training.data import CROP_MARGIN, NUM_CROPS, TenCropImageFolder, check_data_path, collate_all_crops, image_root
from common.folders import folder_contents, shown
from common.distributed import barrier, broadcast_object, placement
from common.files import atomic_write_bytes, atomic_write_text, remove_temporaries, run_lock
from common.json_files import read_json

log = logging.getLogger(__name__)

FORMAT = 1
METADATA = "metadata.json"
CROP = f"adm_center_crop_{CROP_MARGIN}x/ten_crop"
CODE_DTYPE = torch.int16


@dataclass(frozen=True)
class CacheSpec:
    """What a cache must have been made for to train a given model."""

    img_size: int
    scale_sizes: tuple
    autoencoder_sha256: str
    crop: str = CROP

    def describe(self, key: str):
        value = getattr(self, key)
        return list(value) if isinstance(value, tuple) else value


def autoencoder_fingerprint(autoencoder) -> str:
    """SHA-256 of everything that decides the codes: encoder, quant_conv, codebook."""
    h = hashlib.sha256()
    for name, tensor in sorted(autoencoder.state_dict().items()):
        if name.startswith(("encoder.", "quant_conv.", "quantize.embedding")):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{list(t.shape)};".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_spec(generator) -> CacheSpec:
    return CacheSpec(generator.config.img_size, tuple(generator.scale_sizes),
                     autoencoder_fingerprint(generator.autoenc))


def dataset_cache_name(data_path) -> str:
    """The published code's name of a data folder among the caches: its path relative to ./data with
    '/' and '.' turned into '_' (data/imagenet -> imagenet)."""
    relative = os.path.relpath(os.path.abspath(data_path), os.path.abspath("data"))
    return relative.replace(os.sep, "_").replace(".", "_").strip("_")


def default_cache_dir(cached_path, data_path, spec: CacheSpec) -> Path:
    """<cached_path>/<dataset name>/train/token_cache_<size>px_<scales>: the published layout of cache
    roots, with our cache format (which the published code's file name would not describe)."""
    name = f"token_cache_{spec.img_size}px_{'-'.join(map(str, spec.scale_sizes))}"
    return Path(cached_path) / dataset_cache_name(data_path) / "train" / name


def cache_folder(config: TrainConfig, spec: CacheSpec) -> Path:
    """The run's cache folder: cache_path, else the published layout under cached_path."""
    if config.cache_path:
        return Path(config.cache_path)
    return default_cache_dir(config.cached_path, config.data_path, spec)


def create_cache(config: TrainConfig) -> Path:
    """Encode the training images into the token cache (or finish an interrupted one), on this process's
    part of the images; returns its folder."""
    rank, world, device = placement(config.device)
    check_data_path(config.data_path)
    model_section, config_path = config.model_section()
    model = build_generator(model_section, config_path.parent, source=str(config_path))
    model.autoenc.to(device)
    spec = cache_spec(model)
    dataset = config.resolved_dataset()
    return create_token_cache(model, image_root(config.data_path, dataset), cache_folder(config, spec),
                              config.cache_shard_size, config.cache_batch_size, config.num_workers, device, rank,
                              world, progress=config.progress, dataset_kind=dataset)


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def read_metadata(cache_dir) -> dict | None:
    path = Path(cache_dir) / METADATA
    if not path.is_file():
        return None
    return read_json(path, dict, "a token cache's metadata")


def check_spec(metadata: dict, spec: CacheSpec, cache_dir):
    """Refuse a cache made for other scales, size, crop or autoencoder, naming the difference."""
    if metadata.get("format") != FORMAT:
        raise ValueError(f"token cache {cache_dir} has format {metadata.get('format')}, this code reads {FORMAT}")
    made_for = metadata.get("spec", {})
    for key in ("scale_sizes", "img_size", "crop", "autoencoder_sha256"):
        if made_for.get(key) != spec.describe(key):
            what = "a different autoencoder" if key == "autoencoder_sha256" else f"{key} {made_for.get(key)}"
            now = "" if key == "autoencoder_sha256" else f" (this model: {spec.describe(key)})"
            raise ValueError(f"token cache {cache_dir} was made for {what}{now}: pass another --cache_path "
                             f"(and --create_cache to make it)")


def create_token_cache(generator, image_root, cache_dir, shard_size: int, batch_size: int, num_workers: int,
                       device, rank: int = 0, world_size: int = 1, progress: bool = True,
                       dataset_kind: str = "imagefolder") -> Path:
    """Encode the images of `image_root` (see training.data.dataset_samples) into `cache_dir`; resumes an
    interrupted run.

    Every process encodes the shards k with k % world_size == rank; process 0 completes the metadata.
    The autoencoder's encoder must be on `device`.
    """
    cache_dir = Path(cache_dir)
    spec = cache_spec(generator)
    num_classes = generator.config.num_classes if generator.config.class_cond else None
    dataset = TenCropImageFolder(image_root, spec.img_size, num_classes, dataset_kind)
    num_shards = math.ceil(len(dataset) / shard_size)
    plan = {"format": FORMAT, "spec": {k: spec.describe(k) for k in asdict(spec)}, "classes": dataset.classes,
            "num_images": len(dataset), "shard_size": shard_size, "num_shards": num_shards}
    if cache_dir.exists() and not cache_dir.is_dir():
        raise ValueError(f"token cache {cache_dir} is a file, not a folder")
    if _check_existing(cache_dir, spec, plan):
        return cache_dir
    dataset.check_decodable()
    # Process 0 holds the folder while the processes write it; under the lock the cache is read again
    # (another run may have written it meanwhile) and an interrupted run's partial shards are removed.
    with run_lock(cache_dir) if rank == 0 else nullcontext():
        complete = rank == 0 and _check_existing(cache_dir, spec, plan)
        if rank == 0 and not complete:
            remove_temporaries(cache_dir)
            if read_metadata(cache_dir) is None:
                atomic_write_text(cache_dir / METADATA, json.dumps({**plan, "complete": False}, indent=1))
        if broadcast_object(complete):
            return cache_dir
        barrier()

        pending = [k for k in range(rank, num_shards, world_size) if not (cache_dir / shard_name(k)).is_file()]
        if rank == 0:
            missing = sum(not (cache_dir / shard_name(k)).is_file() for k in range(num_shards))
            log.info("token cache %s: %d of %d shards to encode (%d images, ten crops each, scales %s)",
                     cache_dir, missing, num_shards, len(dataset), list(spec.scale_sizes))
        total = sum(min(shard_size, len(dataset) - k * shard_size) for k in pending)
        with tqdm(total=total, unit="img", desc="token cache", disable=not progress or rank != 0) as bar:
            for k in pending:
                _encode_shard(generator, dataset, k, shard_size, batch_size, num_workers, device, cache_dir, bar)
        barrier()
        if rank == 0:
            _complete(cache_dir, plan)
        barrier()
    return cache_dir


def _check_existing(cache_dir: Path, spec: CacheSpec, plan: dict) -> bool:
    """Whether the cache at `cache_dir` is complete; refuses one made for something else."""
    existing = read_metadata(cache_dir)
    if existing is None:
        others = folder_contents(cache_dir)
        if others:
            raise ValueError(f"--cache_path {cache_dir} holds files but no token cache ({shown(others)}): a new cache "
                             f"is made only in a new or empty folder; pass another --cache_path")
        return False
    check_spec(existing, spec, cache_dir)
    for key in ("classes", "num_images", "shard_size"):
        if existing.get(key) != plan[key]:
            raise ValueError(f"token cache {cache_dir} was started with a different {key} "
                             f"({_short(existing.get(key))} vs now {_short(plan[key])}): pass another "
                             f"--cache_path")
    if existing.get("complete"):
        log.info("token cache %s is complete (%d images)", cache_dir, existing["num_cached"])
        return True
    return False


def _short(value):
    return f"{len(value)} classes" if isinstance(value, list) else value


@torch.no_grad()
def _encode_shard(generator, dataset, k, shard_size, batch_size, num_workers, device, cache_dir, bar):
    lo, hi = k * shard_size, min((k + 1) * shard_size, len(dataset))
    loader = DataLoader(Subset(dataset, range(lo, hi)), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_all_crops)
    codes = [[] for _ in generator.scale_sizes]
    labels, indices, skipped = [], [], []
    for crops, batch_labels, batch_indices, batch_skipped in loader:
        skipped += batch_skipped
        if crops is not None:
            B = crops.shape[0]
            flat = crops.to(device, non_blocking=True).flatten(0, 1)  # (B*10, 3, H, W)
            for per_scale, idx in zip(codes, generator.autoenc.encode_pyramid(flat, generator.scale_sizes)):
                per_scale.append(idx.view(B, NUM_CROPS, *idx.shape[1:]).to(CODE_DTYPE).cpu())  # (B, 10, s, s)
            labels.append(batch_labels)
            indices.append(batch_indices)
        bar.update(len(batch_skipped) + (0 if crops is None else crops.shape[0]))
    tensors = {f"codes_{s}": torch.cat(c) if c else torch.zeros(0, NUM_CROPS, s, s, dtype=CODE_DTYPE)
               for s, c in zip(generator.scale_sizes, codes)}
    tensors["labels"] = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    tensors["indices"] = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long)
    metadata = {"shard": str(k), "range": f"{lo},{hi}", "skipped": json.dumps(skipped)}
    atomic_write_bytes(cache_dir / shard_name(k), safetensors_bytes(tensors, metadata=metadata))


def _complete(cache_dir: Path, plan: dict):
    shards, skipped = [], []
    for k in range(plan["num_shards"]):
        with safe_open(cache_dir / shard_name(k), "pt") as f:
            count = f.get_slice("labels").get_shape()[0]
            skipped += json.loads(f.metadata()["skipped"])
        shards.append({"file": shard_name(k), "count": count})
    num_cached = sum(s["count"] for s in shards)
    if skipped:
        log.warning("token cache: %d undecodable images skipped (listed in %s), e.g. %s",
                    len(skipped), cache_dir / METADATA, skipped[0])
    metadata = {**plan, "complete": True, "num_cached": num_cached, "shards": shards, "skipped": skipped}
    atomic_write_text(cache_dir / METADATA, json.dumps(metadata, indent=1))


class TokenCacheDataset(Dataset):
    """Item (index, crop): per-scale codes [(s, s) int16] of crop `crop` of cached image `index`, and its label."""

    def __init__(self, cache_dir, spec: CacheSpec, num_classes: int | None = None):
        self.cache_dir = Path(cache_dir)
        metadata = read_metadata(self.cache_dir)
        if metadata is None:
            raise FileNotFoundError(f"no token cache at {self.cache_dir} (make it with --create_cache)")
        check_spec(metadata, spec, self.cache_dir)
        if not metadata.get("complete"):
            raise ValueError(f"token cache {self.cache_dir} is incomplete (interrupted?): run --create_cache "
                             f"again to finish it")
        cached_classes = len(metadata["classes"]) if metadata.get("classes") is not None else 0
        if num_classes is not None and cached_classes != num_classes:
            raise ValueError(f"token cache {self.cache_dir} has {cached_classes} classes but the "
                             f"config's model.num_classes is {num_classes}")
        self._handles = {}
        self.scale_sizes = spec.scale_sizes
        self.classes = metadata["classes"]
        self.files = [s["file"] for s in metadata["shards"]]
        counts = [s["count"] for s in metadata["shards"]]
        self.starts = [sum(counts[:k]) for k in range(len(counts))]
        self.num_items = sum(counts)
        self.labels = self._column("labels")  # (num_items,)
        self.image_indices = self._column("indices")  # (num_items,) index in the ImageFolder

    def __getstate__(self):
        # Open file handles do not cross into worker processes; each process opens its own.
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def _handle(self, k):
        if k not in self._handles:
            self._handles[k] = safe_open(self.cache_dir / self.files[k], "pt")
        return self._handles[k]

    def _column(self, name):
        parts = [self._handle(k).get_tensor(name) for k in range(len(self.files))]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    def __len__(self):
        return self.num_items

    def __getitem__(self, key):
        index, crop = key
        k = bisect.bisect_right(self.starts, index) - 1
        f, row = self._handle(k), index - self.starts[k]
        codes = [f.get_slice(f"codes_{s}")[row, crop] for s in self.scale_sizes]  # (s, s) each
        return codes, self.labels[index]
