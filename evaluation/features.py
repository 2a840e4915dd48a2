"""The feature networks images are scored with, and the names of the metrics each one gives.

* "inception": ADM's Inception graph (evaluation/inception.py). Its metrics keep their usual names
  (FID, sFID, Inception Score, precision, recall): they compare with published numbers.
* "digits": a classifier of the 32 px digits of demo.py (evaluation/digits_features.py). Its
  metrics are named for it (`digits_fid`, "Digits FID", ...) in every key, table and plot, so a
  digits FID is never read as an Inception FID.

A feature network has `name` (one of FEATURES), `identity` (changes whenever its features would,
e.g. a hash of its weights: statistics cached with it are keyed by it), `check_image_shape((H, W))`,
`activations(uint8 NHWC batches, total, desc) -> (pool (N, D), spatial (N, S))` and
`class_probs(pool) -> (N, classes)`.
"""
from typing import Iterable, Protocol

import numpy as np

FEATURES = ("inception", "digits")
MEASURES = ("is", "fid", "sfid", "precision", "recall")  # in the order of ADM's output

_KEYS = {
    "inception": {"is": "inception_score", "fid": "fid", "sfid": "sfid", "precision": "precision",
                  "recall": "recall"},
    "digits": {m: f"digits_{m}" for m in MEASURES},
}
_LABELS = {
    "inception": {"is": "Inception Score", "fid": "FID", "sfid": "sFID", "precision": "Precision",
                  "recall": "Recall"},  # the lines of ADM's evaluator
    "digits": {"is": "Digits IS", "fid": "Digits FID", "sfid": "Digits sFID", "precision": "Digits Precision",
               "recall": "Digits Recall"},
}


class FeatureNetwork(Protocol):
    name: str
    identity: str

    def check_image_shape(self, shape: tuple) -> None: ...

    def activations(self, batches: Iterable[np.ndarray], total=None, desc=None) -> tuple: ...

    def class_probs(self, pool: np.ndarray) -> np.ndarray: ...


def _check(features: str):
    if features not in FEATURES:
        raise ValueError(f"feature network must be one of {', '.join(FEATURES)}, got {features!r}")


def metric_key(features: str, measure: str) -> str:
    """The key of a measure ("is", "fid", "sfid", "precision", "recall") in rows and files."""
    _check(features)
    return _KEYS[features][measure]


def metric_keys(features: str) -> tuple:
    return tuple(metric_key(features, m) for m in MEASURES)


def metric_label(features: str, measure: str) -> str:
    """Its name in printed results, tables and plots."""
    _check(features)
    return _LABELS[features][measure]


def label_of_key(key: str) -> str:
    """The label of a metric key of any network."""
    for features, keys in _KEYS.items():
        for measure, k in keys.items():
            if k == key:
                return _LABELS[features][measure]
    raise ValueError(f"{key!r} is no metric key")


def check_image_shape(features: str, shape: tuple):
    """What a network reads, known before it is loaded (the digits network trains for seconds)."""
    _check(features)
    if features == "digits":
        from evaluation.digits_features import check_image_shape as check_digits_shape  # torch: only when asked for

        check_digits_shape(shape)


def load_features(features: str, inception_graph=None) -> FeatureNetwork:
    """The network `features` names: Inception from `inception_graph` (else the cached or downloaded
    graph), or the digits classifier, trained here (seconds)."""
    _check(features)
    if features == "inception":
        from evaluation.inception import InceptionFeatures, find_inception_graph

        return InceptionFeatures(find_inception_graph(inception_graph))
    from evaluation.digits_features import train_digits_features  # torch: only when asked for

    return train_digits_features()
