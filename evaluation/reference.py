"""A batch's features in one network's space, statistics files, and reference statistics cached by content.

What the metrics need of a batch (`FeatureSet`): the pool features (precision, recall, IS), their
k-NN radii (precision and recall), mu/sigma of the pool features (FID) and mu_s/sigma_s of the
spatial ones (sFID). ADM keeps the reference's pool features for precision and recall, so a
statistics file keeps them too, with the radii (a reference's radii cost as much as the rest of
precision and recall together) and what makes the file safe to reuse: the network's name and
identity and the images' size.

A statistics file (`--save_stats`, and each cached reference) is an npz with mu, sigma, mu_s,
sigma_s, pool, radii, radii_arithmetic, image_shape (H, W), features and features_identity; radii
of another arithmetic than today's (statistics.RADII_ARITHMETIC) are computed again from pool.
ADM's own reference batches carry mu, sigma, mu_s, sigma_s beside their images (`arr_0`); those
are Inception statistics, and, as in ADM, they win over statistics computed from the images.

`reference_statistics(path, network, cache_dir=...)` reads a reference once: its statistics are
stored in `cache_dir` under the SHA-256 of the file's bytes (of every image file, for a folder)
and the network's identity, so a sweep of dozens of points computes them once, and a changed
file or another network never reads a stale entry.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from common.files import atomic_write, new_file_write
from common.content_hash import content_hash
from evaluation.batches import Batch, EvalError, open_batch
from evaluation.statistics import RADII_ARITHMETIC, STAT_KEYS, feature_statistics, manifold_radii

CACHE_PREFIX = "reference"
ADM_FEATURES = "inception"  # the network of the statistics in ADM's npz files (which do not say)


@dataclass
class FeatureSet:
    """One batch in one network's feature space."""
    pool: np.ndarray  # (N, D)
    stats: dict  # mu, sigma, mu_s, sigma_s
    image_shape: tuple  # (H, W) of the images
    features: str  # the network's name
    features_identity: Optional[str]  # None: statistics of a file that does not say (ADM's)
    radii: Optional[np.ndarray] = None  # (N,) k-NN radii of pool, once computed

    def with_radii(self) -> "FeatureSet":
        if self.radii is None:
            self.radii = manifold_radii(self.pool)
        return self


def _text(saved, key):
    return str(saved[key]) if key in saved else None


def _saved_statistics(batch: Batch, network) -> Optional[dict]:
    """The statistics a batch carries, checked against `network`; None if it carries none."""
    saved = batch.saved or {}
    present = [k for k in STAT_KEYS if k in saved]
    if not present:
        return None
    if len(present) < len(STAT_KEYS):
        missing = [k for k in STAT_KEYS if k not in saved]
        raise EvalError(f"{batch.path} has {', '.join(present)} but not {', '.join(missing)}")
    features = _text(saved, "features") or ADM_FEATURES
    identity = _text(saved, "features_identity")
    if features != network.name:
        raise EvalError(f"{batch.path} holds statistics of the {features} features, not of the {network.name} "
                        f"features asked for")
    if identity is not None and identity != network.identity:
        raise EvalError(f"{batch.path} holds statistics of another {features} network ({identity}, not "
                        f"{network.identity}): compute them again")
    return {k: saved[k] for k in STAT_KEYS}


def batch_features(network, batch: Batch, batch_size: int = 64, desc: Optional[str] = None) -> FeatureSet:
    """A batch's features through `network` (or as its statistics file holds them); statistics a
    batch carries win over those of its images, as in ADM."""
    network.check_image_shape(batch.image_shape)
    stats = _saved_statistics(batch, network)
    if batch.read is None:  # a statistics file
        saved = batch.saved
        radii = saved.get("radii")
        usable = radii is not None and len(radii) == len(saved["pool"]) and \
            _text(saved, "radii_arithmetic") == RADII_ARITHMETIC
        return FeatureSet(saved["pool"], stats, batch.image_shape, network.name, _text(saved, "features_identity"),
                          radii if usable else None)
    pool, spatial = network.activations(batch.read(batch_size), math.ceil(batch.count / batch_size), desc)
    if len(pool) != batch.count:
        raise EvalError(f"{batch.path}: read {len(pool)} images, expected {batch.count}")
    identity = network.identity if stats is None else _text(batch.saved, "features_identity")
    return FeatureSet(pool, stats or feature_statistics(pool, spatial), batch.image_shape, network.name, identity)


def save_statistics(path, feature_set: FeatureSet, source_sha256: Optional[str] = None,
                    new_file_option: Optional[str] = None) -> Path:
    """Write a statistics file (usable as REF or SAMPLE) atomically; with `new_file_option` (the option
    that names it, for the message) as a new file only."""
    fs = feature_set.with_radii()
    extra = {} if fs.features_identity is None else {"features_identity": np.array(fs.features_identity)}
    if source_sha256 is not None:
        extra["source_sha256"] = np.array(source_sha256)

    def write(f):
        np.savez(f, pool=fs.pool, radii=fs.radii, radii_arithmetic=np.array(RADII_ARITHMETIC), **fs.stats,
                 image_shape=np.array(fs.image_shape, np.int64), features=np.array(fs.features), **extra)

    return atomic_write(path, write) if new_file_option is None else new_file_write(path, write, new_file_option)


def cache_path(cache_dir, source_sha256: str, network) -> Path:
    return Path(cache_dir) / f"{CACHE_PREFIX}-{source_sha256[:20]}-{network.identity}.npz"


def reference_from_batch(batch: Batch, network, batch_size: int = 64, cache_dir=None) -> FeatureSet:
    """`reference_statistics` of a batch already opened."""
    if cache_dir is None:
        return batch_features(network, batch, batch_size, "reference").with_radii()
    sha = content_hash(batch.path)
    cached = cache_path(cache_dir, sha, network)
    if cached.is_file():
        entry = open_batch(cached)
        if _text(entry.saved, "source_sha256") != sha:
            raise EvalError(f"{cached} was not computed from {batch.path} (its source hash differs); move it away")
        if entry.image_shape != batch.image_shape:
            raise EvalError(f"{cached} records {entry.image_shape} images, but {batch.path} has {batch.image_shape}")
        return batch_features(network, entry).with_radii()
    feature_set = batch_features(network, batch, batch_size, "reference").with_radii()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    save_statistics(cached, feature_set, sha)
    return feature_set


def reference_statistics(path, network, batch_size: int = 64, cache_dir=None) -> FeatureSet:
    """The reference's features, statistics and radii; with `cache_dir`, computed once per content
    and network and read back from there afterwards."""
    return reference_from_batch(open_batch(path), network, batch_size, cache_dir)
