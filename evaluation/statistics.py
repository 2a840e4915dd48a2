"""The numbers of the ADM evaluator from features: Frechet distance, Inception Score, precision and recall.

Numpy and scipy, whatever network made the features (evaluation/features.py); the distances of
precision and recall are TensorFlow's, in ADM's float16 (evaluation/distances.py).
"""
import warnings

import numpy as np
from scipy import linalg

from evaluation.distances import sq_distances

STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
NEIGHBOURS = 3  # ADM's ManifoldEstimator: the k of the k-NN balls of precision and recall
ADM_BLOCK = 10000  # ADM's ManifoldEstimator: rows and columns of one distance block
# how manifold_radii computes radii, kept beside radii in statistics files: radii of another
# arithmetic (float32 distances, before 2026-12) are computed again rather than mixed with these
RADII_ARITHMETIC = "adm-float16-blocks-10000"
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


def _nearest(rows, columns, k, batch_size):
    """The k+1 smallest squared distances from each row to the columns (unordered), the columns
    taken in ADM's blocks: the block decides float16 or float32 (distances.py)."""
    smallest = []
    for j in range(0, len(columns), batch_size):
        d = sq_distances(rows, columns[j : j + batch_size])
        kth = min(k, d.shape[1] - 1)
        smallest.append(np.partition(d, kth, axis=1)[:, : kth + 1])
    return np.concatenate(smallest, axis=1)


def manifold_radii(features, k=NEIGHBOURS, batch_size=ADM_BLOCK):
    """Squared distance from each feature to its k-th nearest neighbour in the same set, with ADM's
    distances (`batch_size` features a side per distance block)."""
    features = np.asarray(features, np.float32)
    if len(features) <= k:
        raise ValueError(f"a k-NN radius with k={k} needs at least {k + 1} features, got {len(features)}")
    # column 0 of a sorted row is the point itself, so column k is the k-th neighbour; the k+1
    # smallest of each column block hold the k+1 smallest of the whole row, so a row of all
    # distances (ADM's) is not needed
    return np.concatenate([
        np.partition(_nearest(features[i : i + batch_size], features, k, batch_size), k, axis=1)[:, k]
        for i in range(0, len(features), batch_size)
    ])


def precision_recall(ref_features, sample_features, k=NEIGHBOURS, batch_size=ADM_BLOCK, ref_radii=None):
    """ADM's ManifoldEstimator: precision = share of samples inside some reference k-NN ball,
    recall = share of references inside some sample k-NN ball (inside: distance <= radius), with
    ADM's distances. `ref_radii`: the references' manifold_radii, when already known (a cached
    reference)."""
    ref, sample = np.asarray(ref_features, np.float32), np.asarray(sample_features, np.float32)
    if ref_radii is None:
        ref_radii = manifold_radii(ref, k, batch_size)
    elif len(ref_radii) != len(ref):
        raise ValueError(f"{len(ref_radii)} reference radii for {len(ref)} reference features")
    sample_radii = manifold_radii(sample, k, batch_size)
    ref_in, sample_in = np.zeros(len(ref), bool), np.zeros(len(sample), bool)
    for i in range(0, len(ref), batch_size):
        for j in range(0, len(sample), batch_size):
            d = sq_distances(ref[i : i + batch_size], sample[j : j + batch_size])
            ref_in[i : i + batch_size] |= (d <= sample_radii[None, j : j + batch_size]).any(1)
            sample_in[j : j + batch_size] |= (d <= ref_radii[i : i + batch_size, None]).any(0)
    return float(sample_in.mean()), float(ref_in.mean())


def feature_statistics(pool, spatial):
    """mu, sigma of pool features and mu_s, sigma_s of spatial features."""
    return dict(mu=pool.mean(0), sigma=np.cov(pool, rowvar=False),
                mu_s=spatial.mean(0), sigma_s=np.cov(spatial, rowvar=False))
