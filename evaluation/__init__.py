"""Evaluation of sample batches by the ADM evaluator's protocol: FID, sFID, IS, precision and recall.

    statistics.py       the numbers from features (Frechet distance, IS, k-NN precision/recall)
    distances.py        the distances of precision and recall, in ADM's float16 (TensorFlow, imported when used)
    tf_runtime.py       TensorFlow, imported on first use, and its sessions
    batches.py          the inputs: an npz of images, a folder of images, a statistics file
    inception.py        ADM's Inception graph (TensorFlow, imported when a graph is read)
    digits_features.py  a classifier of demo.py's digits as a feature network (torch, imported when used)
    features.py         the choice of network and the names of its metrics
    reference.py        a batch's features, statistics files, reference statistics cached by content
    evaluate.py         the metrics of a sample batch against a reference

Importing the package loads neither TensorFlow nor torch.
"""
from evaluation.batches import EvalError, open_batch
from evaluation.evaluate import evaluate, evaluate_samples, metrics
from evaluation.features import (FEATURES, MEASURES, label_of_key, load_features, metric_key, metric_keys,
                                 metric_label)
from evaluation.reference import FeatureSet, batch_features, reference_statistics, save_statistics

__all__ = ["EvalError", "open_batch", "evaluate", "evaluate_samples", "metrics", "FEATURES", "MEASURES",
           "label_of_key", "load_features", "metric_key", "metric_keys", "metric_label", "FeatureSet",
           "batch_features", "reference_statistics", "save_statistics"]
