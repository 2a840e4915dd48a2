"""ADM's Inception network: the TensorFlow graph `classify_image_graph_def.pb`, found or downloaded once.

Same graph, tensors and class probabilities as openai/guided-diffusion `evaluations/evaluator.py`,
so the numbers compare with published ones. TensorFlow is imported when a graph is read, never
when this module is.
"""
import hashlib
import http.client
import os
import urllib.request
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common.files import atomic_write
from evaluation.batches import EvalError
from evaluation.tf_runtime import new_session, tensorflow_v1

GRAPH_NAME = "classify_image_graph_def.pb"
GRAPH_URL = f"https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/{GRAPH_NAME}"
INPUT, POOL, SPATIAL, LOGITS = "ExpandDims:0", "pool_3:0", "mixed_6/conv:0", "softmax/logits/MatMul"
SPATIAL_CHANNELS = 7  # ADM's sFID reads the first 7 channels of mixed_6/conv (17x17x7 values)
SOFTMAX_BATCH = 512


def cached_graph_path():
    return Path(os.environ.get("CHECKERBOARD_CACHE", Path.home() / ".cache" / "checkerboard-gen")) / GRAPH_NAME


def read_graph_def(path):
    """Parse the Inception GraphDef and check it has the tensors ADM reads."""
    from google.protobuf.message import DecodeError

    graph_def = tensorflow_v1().GraphDef()
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


class InceptionFeatures:
    """The ADM feature and softmax graphs; runs on the GPU when TensorFlow sees one.

    `name` and `identity` as every feature network (evaluation/features.py): the identity is the
    graph file's hash, so statistics cached with one graph are never read with another."""

    name = "inception"

    def __init__(self, graph_path):
        tf = tensorflow_v1()
        graph_bytes = Path(graph_path).read_bytes()
        self.identity = f"inception-{hashlib.sha256(graph_bytes).hexdigest()[:16]}"
        graph_def = read_graph_def(graph_path)
        self.sess = new_session()
        with self.sess.graph.as_default():
            self.images = tf.placeholder(tf.float32, [None, None, None, 3])
            pool, spatial, matmul = tf.import_graph_def(graph_def, input_map={INPUT: self.images},
                                                        return_elements=[POOL, SPATIAL, LOGITS], name="inception")
            self.features = pool, spatial[..., :SPATIAL_CHANNELS]
            # ADM: class probabilities from the pool features and the logits weight, no bias
            self.pool = tf.placeholder(tf.float32, [None, None])
            self.softmax = tf.nn.softmax(tf.matmul(self.pool, matmul.inputs[1]))

    def check_image_shape(self, shape):
        """Any size: the graph resizes its input to 299x299."""

    def activations(self, batches, total=None, desc=None):
        """Pool features (N, 2048) and spatial features (N, 17*17*7) of uint8 NHWC batches."""
        pools, spatials = [], []
        for batch in tqdm(batches, total=total, desc=desc):
            pool, spatial = self.sess.run(self.features, {self.images: batch.astype(np.float32)})
            pools.append(pool.reshape(len(pool), -1))
            spatials.append(spatial.reshape(len(spatial), -1))
        return np.concatenate(pools), np.concatenate(spatials)

    def class_probs(self, pool):
        return np.concatenate([self.sess.run(self.softmax, {self.pool: pool[i : i + SOFTMAX_BATCH]})
                               for i in range(0, len(pool), SOFTMAX_BATCH)])
