"""A stand-in for ADM's Inception graph: a tiny TensorFlow graph with the tensor names the evaluator
reads, and the same computation in numpy. For tests of anything that evaluates 32x32 images
(evaluator.py, a sweep) without the 95 MB graph."""
import os

import numpy as np
from scipy.special import softmax

RNG = np.random.default_rng(0)
# stand-in weights: 2x2 stride-2 conv (3 -> 8 channels), pool projection 32 -> 16, 10 classes
CONV_W = RNG.normal(size=(2, 2, 3, 8)).astype(np.float32)
POOL_W = RNG.normal(size=(32, 16)).astype(np.float32)
LOGIT_W = RNG.normal(size=(16, 10)).astype(np.float32)
IMAGE_SIZE = 32  # the graph's reshape fixes its input size


def build_standin_graph(path):
    """A tiny graph with the tensor names ADM reads from classify_image_graph_def.pb."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow.compat.v1 as tf

    with tf.Graph().as_default() as g:
        image = tf.placeholder(tf.float32, [None, None, 3], name="Cast")
        x = tf.expand_dims(image, 0, name="ExpandDims")
        x = tf.nn.avg_pool2d(x, 8, 8, "VALID") / 255  # stands in for the resize to 299x299
        conv = tf.nn.conv2d(x, tf.constant(CONV_W), 2, "VALID", name="mixed_6/conv")
        pool = tf.reshape(tf.matmul(tf.reshape(tf.tanh(conv), [-1, 32]), POOL_W), [-1, 1, 1, 16], name="pool_3")
        logits = tf.matmul(tf.reshape(pool, [-1, 16], name="pool_3/_reshape"), tf.constant(LOGIT_W),
                           name="softmax/logits/MatMul")
        tf.nn.softmax(logits, name="softmax")
    path.write_bytes(g.as_graph_def().SerializeToString())


def standin_features(images):
    """The stand-in graph in numpy: pool features, spatial features, class probabilities."""
    n = len(images)
    x = images.astype(np.float64).reshape(n, 4, 8, 4, 8, 3).mean((2, 4)) / 255
    conv = np.einsum("nipjqc,pqcd->nijd", x.reshape(n, 2, 2, 2, 2, 3), CONV_W)
    pool = np.tanh(conv).reshape(n, 32) @ POOL_W
    return pool, conv[..., :7].reshape(n, -1), softmax(pool @ LOGIT_W, axis=1)
