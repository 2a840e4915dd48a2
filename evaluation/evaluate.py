"""All five metrics of a sample batch against a reference: the ADM evaluator's protocol, in any feature network."""

from common.files import check_new_file
from evaluation.batches import Batch, EvalError, open_batch
from evaluation.features import check_image_shape, load_features, metric_key
from evaluation.reference import FeatureSet, batch_features, reference_from_batch, save_statistics
from evaluation.statistics import frechet_distance, inception_score, precision_recall


def check_same_size(ref_name: str, ref_shape: tuple, sample: Batch):
    """REF and SAMPLE must hold images of one size: scores across sizes compare nothing (ADM keeps one
    reference batch per resolution)."""
    if tuple(ref_shape) != tuple(sample.image_shape):
        (rh, rw), (sh, sw) = ref_shape, sample.image_shape
        raise EvalError(f"{ref_name} holds {rh}x{rw} images but {sample.path} holds {sh}x{sw}: "
                        f"use the reference batch of the samples' resolution")


def metrics(ref: FeatureSet, sample: FeatureSet, network) -> dict:
    """{metric key: value} in the order of ADM's output, keys named for the network (evaluation/features.py)."""
    for fs in (ref, sample):
        if fs.features != network.name:
            raise EvalError(f"features of the {fs.features} network cannot be scored as {network.name} features")
    ref = ref.with_radii()
    precision, recall = precision_recall(ref.pool, sample.pool, ref_radii=ref.radii)
    s, r = sample.stats, ref.stats
    values = {
        "is": inception_score(network.class_probs(sample.pool)),
        "fid": frechet_distance(s["mu"], s["sigma"], r["mu"], r["sigma"]),
        "sfid": frechet_distance(s["mu_s"], s["sigma_s"], r["mu_s"], r["sigma_s"]),
        "precision": precision,
        "recall": recall,
    }
    return {metric_key(network.name, measure): value for measure, value in values.items()}


def evaluate_samples(ref: FeatureSet, sample_path, network, batch_size: int = 64) -> dict:
    """The metrics of the sample batch at `sample_path` against a reference read once
    (`reference.reference_statistics`); what a sweep calls for each point."""
    sample = open_batch(sample_path)
    check_same_size("the reference", ref.image_shape, sample)
    return metrics(ref, batch_features(network, sample, batch_size, "sample"), network)


def evaluate(ref_path, sample_path, features: str = "inception", inception_graph=None, batch_size: int = 64,
             save_stats=None, reference_cache=None, network=None) -> dict:
    """All five metrics for a reference and a sample batch. Both inputs are checked before the
    network is loaded (`network`, if given, is used as it is). `save_stats` writes REF's statistics
    file (a new file only); `reference_cache` is a folder of reference statistics by content."""
    if save_stats is not None:
        check_new_file(save_stats, "--save_stats")
    ref, sample = open_batch(ref_path), open_batch(sample_path)
    check_same_size(ref.path, ref.image_shape, sample)
    if network is None:
        check_image_shape(features, ref.image_shape)
        network = load_features(features, inception_graph)
    ref_features = reference_from_batch(ref, network, batch_size, reference_cache)
    sample_features = batch_features(network, sample, batch_size, "sample")
    if save_stats is not None:
        save_statistics(save_stats, ref_features, new_file_option="--save_stats")
    return metrics(ref_features, sample_features, network)
