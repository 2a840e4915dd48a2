"""ADM evaluation (the protocol of the guided-diffusion evaluator): Inception Score, FID, sFID, precision and recall.

Same graph, features and statistics as openai/guided-diffusion `evaluations/evaluator.py`, so
the numbers compare with published ones. TensorFlow is imported only when images go through
the Inception graph; the statistics below need numpy and scipy alone.

    python evaluator.py REF SAMPLE [--inception_graph PATH] [--output_file F]
"""
import argparse
import http.client
import math
import os
import sys
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from scipy import linalg
from tqdm.auto import tqdm

from common import npz
from common.files import atomic_write, atomic_write_text
from common.images import IMAGE_EXTENSIONS, ImageError, list_images, load_rgb_array

GRAPH_NAME = "classify_image_graph_def.pb"
GRAPH_URL = f"https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/{GRAPH_NAME}"
INPUT, POOL, SPATIAL, LOGITS = "ExpandDims:0", "pool_3:0", "mixed_6/conv:0", "softmax/logits/MatMul"
STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")


class EvalError(Exception):
    """A problem with the command's inputs, reported as one line."""


# ---------------------------------------------------------------- statistics


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


def inception_score(probs, split_size=5000):
    """Mean over splits of exp(mean KL(p(y|x) || p(y))), as in improved-gan and ADM."""
    scores = []
    for i in range(0, len(probs), split_size):
        part = probs[i : i + split_size]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


def _sq_distances(a, b):
    # ADM's DistanceBlock formula, clamped at zero
    return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0)


def manifold_radii(features, k=3, batch_size=1000):
    """Squared distance from each feature to its k-th nearest neighbour in the same set."""
    features = np.asarray(features, np.float32)
    # column 0 of a sorted row is the point itself, so column k is the k-th neighbour
    return np.concatenate([
        np.partition(_sq_distances(features[i : i + batch_size], features), k, axis=1)[:, k]
        for i in range(0, len(features), batch_size)
    ])


def precision_recall(ref_features, sample_features, k=3, batch_size=1000):
    """ADM's ManifoldEstimator: precision = share of samples inside some reference k-NN ball,
    recall = share of references inside some sample k-NN ball."""
    ref, sample = np.asarray(ref_features, np.float32), np.asarray(sample_features, np.float32)
    ref_radii, sample_radii = manifold_radii(ref, k, batch_size), manifold_radii(sample, k, batch_size)
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


# ---------------------------------------------------------------- inputs


@dataclass
class Batch:
    """An input: images to stream through Inception, or pool features saved by --save_stats."""
    count: int
    read: Optional[Callable[[int], Iterator[np.ndarray]]] = None  # batch_size -> uint8 NHWC batches
    pool: Optional[np.ndarray] = None
    stats: Optional[dict] = None  # precomputed mu, sigma, mu_s, sigma_s


def _check_images(shape, dtype, what):
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or shape[0] == 0:
        raise EvalError(f"{what} must be uint8 images of shape (N, H, W, 3), got {np.dtype(dtype)} {tuple(shape)}")


def _open_npz(path):
    try:
        with np.load(path) as data:
            saved = {k: data[k] for k in (*STAT_KEYS, "pool") if k in data.files}
            has_images = "arr_0" in data.files
        header = npz.array_header(path, "arr_0") if has_images else None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise EvalError(f"cannot read {path}: {e}") from None
    stats = {k: saved[k] for k in STAT_KEYS} if all(k in saved for k in STAT_KEYS) else None
    if header is None:
        if stats is None or "pool" not in saved:
            raise EvalError(f"{path} has no arr_0 (nor mu, sigma, mu_s, sigma_s, pool from --save_stats)")
        return Batch(len(saved["pool"]), pool=saved["pool"], stats=stats)
    _check_images(header.shape, header.dtype, f"{path} arr_0")
    # streamed from the zip member rather than holding 50k images in memory
    return Batch(header.shape[0], lambda batch_size: npz.iter_rows(path, "arr_0", batch_size), stats=stats)


def _load_image(path):
    if path.suffix.lower() == ".npy":
        image = np.load(path)
    else:
        try:
            image = load_rgb_array(path)
        except ImageError as e:
            raise EvalError(str(e)) from None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise EvalError(f"{path} must be a uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
    return image


def _open_folder(path):
    files = list_images(path, IMAGE_EXTENSIONS + (".npy",))
    if not files:
        raise EvalError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)}) or .npy arrays")
    first = _load_image(files[0])

    def read(batch_size):
        for i in range(0, len(files), batch_size):
            images = [_load_image(p) for p in files[i : i + batch_size]]
            for p, image in zip(files[i:], images):
                if image.shape != first.shape:
                    raise EvalError(f"{p} has shape {image.shape}, unlike {files[0]} with {first.shape}")
            yield np.stack(images)

    return Batch(len(files), read)


def open_batch(path):
    """Check an npz or image folder and return it as a Batch."""
    if os.path.isdir(path):
        return _open_folder(path)
    if not os.path.isfile(path):
        raise EvalError(f"{path} not found")
    if not zipfile.is_zipfile(path):
        raise EvalError(f"{path} is neither an npz file nor a folder of images")
    return _open_npz(path)


# ---------------------------------------------------------------- Inception graph


def cached_graph_path():
    return Path(os.environ.get("CHECKERBOARD_CACHE", Path.home() / ".cache" / "checkerboard-gen")) / GRAPH_NAME


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter
    import tensorflow.compat.v1 as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def read_graph_def(path):
    """Parse the Inception GraphDef and check it has the tensors ADM reads."""
    from google.protobuf.message import DecodeError

    graph_def = _tf().GraphDef()
    try:
        graph_def.ParseFromString(Path(path).read_bytes())
    except DecodeError as e:
        raise EvalError(f"{path} is not a TensorFlow GraphDef ({e})") from None
    missing = {name.split(":")[0] for name in (INPUT, POOL, SPATIAL, LOGITS)} - {n.name for n in graph_def.node}
    if missing:
        raise EvalError(f"{path} lacks the Inception ops {sorted(missing)}")
    return graph_def


def _download_graph(dest):
    dest.parent.mkdir(parents=True, exist_ok=True)

    def download(f):
        with urllib.request.urlopen(GRAPH_URL, timeout=60) as r:
            size = int(r.headers.get("Content-Length") or 0)
            with tqdm(total=size or None, unit="B", unit_scale=True, desc=f"downloading {GRAPH_NAME}") as bar:
                while chunk := r.read(1 << 20):
                    bar.update(f.write(chunk))
        f.flush()
        if size and f.tell() != size:
            raise EvalError(f"download of {GRAPH_URL} stopped at {f.tell()} of {size} bytes")
        # We know no published SHA-256 of this file, so rather than trust an unsourced hash we
        # check that it parses as a GraphDef holding the tensors we read.
        read_graph_def(f.name)

    atomic_write(dest, download)  # a cached graph is always complete


def find_inception_graph(path=None):
    """--inception_graph, else the cached copy, else download it to the cache."""
    if path is not None:
        if not os.path.isfile(path):
            raise EvalError(f"Inception graph {path} not found")
        return Path(path)
    cached = cached_graph_path()
    if not cached.is_file():
        try:
            _download_graph(cached)
        except (OSError, http.client.HTTPException) as e:
            raise EvalError(f"no Inception graph at {cached} and downloading it failed ({e}); "
                            f"pass --inception_graph PATH to a copy of {GRAPH_URL}") from None
    return cached


class Inception:
    """The ADM feature and softmax graphs; runs on the GPU when TensorFlow sees one."""

    def __init__(self, graph_path):
        tf = _tf()
        graph_def = read_graph_def(graph_path)
        config = tf.ConfigProto(allow_soft_placement=True)  # DecodeJpeg has no GPU kernel
        config.gpu_options.allow_growth = True
        self.sess = tf.Session(graph=tf.Graph(), config=config)
        with self.sess.graph.as_default():
            self.images = tf.placeholder(tf.float32, [None, None, None, 3])
            pool, spatial, matmul = tf.import_graph_def(graph_def, input_map={INPUT: self.images},
                                                        return_elements=[POOL, SPATIAL, LOGITS], name="inception")
            self.features = pool, spatial[..., :7]
            # ADM: class probabilities from the pool features and the logits weight, no bias
            self.pool = tf.placeholder(tf.float32, [None, None])
            self.softmax = tf.nn.softmax(tf.matmul(self.pool, matmul.inputs[1]))

    def activations(self, batches, total=None, desc=None):
        """Pool features (N, 2048) and spatial features (N, 17*17*7) of uint8 NHWC batches."""
        pools, spatials = [], []
        for batch in tqdm(batches, total=total, desc=desc):
            pool, spatial = self.sess.run(self.features, {self.images: batch.astype(np.float32)})
            pools.append(pool.reshape(len(pool), -1))
            spatials.append(spatial.reshape(len(spatial), -1))
        return np.concatenate(pools), np.concatenate(spatials)

    def class_probs(self, pool, batch_size=512):
        return np.concatenate([self.sess.run(self.softmax, {self.pool: pool[i : i + batch_size]})
                               for i in range(0, len(pool), batch_size)])


# ---------------------------------------------------------------- evaluation


def batch_features(net, batch, batch_size=64, desc=None):
    """Pool features and FID statistics of a Batch (precomputed statistics win, as in ADM)."""
    if batch.read is None:
        return batch.pool, batch.stats
    pool, spatial = net.activations(batch.read(batch_size), math.ceil(batch.count / batch_size), desc)
    return pool, batch.stats or feature_statistics(pool, spatial)


def evaluate(ref_path, sample_path, inception_graph=None, batch_size=64, save_stats=None):
    """All five numbers for a reference and a sample batch; save_stats writes REF's statistics."""
    ref, sample = open_batch(ref_path), open_batch(sample_path)
    net = Inception(find_inception_graph(inception_graph))
    ref_pool, ref_stats = batch_features(net, ref, batch_size, "reference")
    sample_pool, sample_stats = batch_features(net, sample, batch_size, "sample")
    if save_stats:
        atomic_write(save_stats, lambda f: np.savez(f, pool=ref_pool, **ref_stats))
    precision, recall = precision_recall(ref_pool, sample_pool)
    s, r = sample_stats, ref_stats
    return {
        "Inception Score": inception_score(net.class_probs(sample_pool)),
        "FID": frechet_distance(s["mu"], s["sigma"], r["mu"], r["sigma"]),
        "sFID": frechet_distance(s["mu_s"], s["sigma_s"], r["mu_s"], r["sigma_s"]),
        "Precision": precision,
        "Recall": recall,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="evaluator.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", help="reference batch: npz (arr_0 uint8 NHWC, optional mu/sigma/mu_s/sigma_s), "
                                    "image folder or a --save_stats npz")
    parser.add_argument("sample", help="sample batch: npz or folder of .png/.npy images")
    parser.add_argument("--inception_graph", help=f"path to {GRAPH_NAME} (default: cached copy, downloaded once)")
    parser.add_argument("--output_file", help="also write the results here")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--save_stats",
                        help="write REF's statistics (mu, sigma, mu_s, sigma_s, pool) to this npz, usable as REF")
    args = parser.parse_args(argv)
    try:
        results = evaluate(args.ref, args.sample, args.inception_graph, args.batch_size, args.save_stats)
    except EvalError as e:
        print(f"evaluator.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    text = "".join(f"{name}: {value}\n" for name, value in results.items())
    print(text, end="")
    if args.output_file:
        Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output_file, text)


if __name__ == "__main__":
    main()
