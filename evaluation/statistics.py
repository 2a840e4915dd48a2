"""The numbers of the ADM evaluator from features: Frechet distance, Inception Score, precision and recall.

Numpy and scipy only, whatever network made the features (evaluation/features.py).
"""
import warnings

import numpy as np
from scipy import linalg

STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
NEIGHBOURS = 3  # ADM's ManifoldEstimator: the k of the k-NN balls of precision and recall
IS_SPLIT = 5000  # improved-gan / ADM: Inception Score averaged over splits of this many samples


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Frechet distance between two Gaussians (ADM / TTUR)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in shape: {mu1.shape} vs {mu2.shape}, "
                         f"{sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    # ADM passes disp=False only to get the error estimate it ignores; the root is the same,
    # and scipy 1.17 deprecates the argument.
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"fid calculation produces singular product; adding {eps} to diagonal of cov estimates")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    # numerical error might give a slight imaginary component
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(probs, split_size=IS_SPLIT):
    """Mean over splits of exp(mean KL(p(y|x) || p(y))), as in improved-gan and ADM."""
    scores = []
    for i in range(0, len(probs), split_size):
        part = probs[i : i + split_size]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


def _sq_distances(a, b):
    # ADM's DistanceBlock formula, clamped at zero. ADM evaluates it in float16 (float32 only when a
    # value overflows); we keep float32. Measured 2026-11-23 on the 2-core CPU machine, 3000 + 3000
    # synthetic 2048-d gamma-distributed features (squared norms ~1200): ADM's TensorFlow float16
    # graph gave precision 0.2003, recall 0.6867; this function 0.1980, 0.6857; numpy emulating
    # float16 rounding 0.1997, 0.6877. Float16 results depend on the kernel's accumulation, so ADM's
    # own numbers move by about that much across hardware.
    return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0)


def manifold_radii(features, k=NEIGHBOURS, batch_size=1000):
    """Squared distance from each feature to its k-th nearest neighbour in the same set."""
    features = np.asarray(features, np.float32)
    if len(features) <= k:
        raise ValueError(f"a k-NN radius with k={k} needs at least {k + 1} features, got {len(features)}")
    # column 0 of a sorted row is the point itself, so column k is the k-th neighbour
    return np.concatenate([
        np.partition(_sq_distances(features[i : i + batch_size], features), k, axis=1)[:, k]
        for i in range(0, len(features), batch_size)
    ])


def precision_recall(ref_features, sample_features, k=NEIGHBOURS, batch_size=1000, ref_radii=None):
    """ADM's ManifoldEstimator: precision = share of samples inside some reference k-NN ball,
    recall = share of references inside some sample k-NN ball. `ref_radii`: the references'
    manifold_radii, when already known (a cached reference)."""
    ref, sample = np.asarray(ref_features, np.float32), np.asarray(sample_features, np.float32)
    if ref_radii is None:
        ref_radii = manifold_radii(ref, k, batch_size)
    elif len(ref_radii) != len(ref):
        raise ValueError(f"{len(ref_radii)} reference radii for {len(ref)} reference features")
    sample_radii = manifold_radii(sample, k, batch_size)
    ref_in, sample_in = np.zeros(len(ref), bool), np.zeros(len(sample), bool)
    for i in range(0, len(ref), batch_size):
        d = _sq_distances(ref[i : i + batch_size], sample)
        ref_in[i : i + batch_size] = (d <= sample_radii[None, :]).any(1)
        sample_in |= (d <= ref_radii[i : i + batch_size, None]).any(0)
    return float(sample_in.mean()), float(ref_in.mean())


def feature_statistics(pool, spatial):
    """mu, sigma of pool features and mu_s, sigma_s of spatial features."""
    return dict(mu=pool.mean(0), sigma=np.cov(pool, rowvar=False),
                mu_s=spatial.mean(0), sigma_s=np.cov(spatial, rowvar=False))
