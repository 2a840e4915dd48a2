"""TensorFlow for the evaluator (ADM's Inception graph and its precision/recall distances), imported
on first use so that importing the package never loads it."""
import os


def tensorflow_v1():
    """`tensorflow.compat.v1`, the API of ADM's evaluator, imported quietly."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter
    import tensorflow.compat.v1 as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def new_session():
    """A session on a graph of its own, configured as ADM's: ops without a GPU kernel (DecodeJpeg)
    fall back to the CPU, and GPU memory is taken as needed, so that several sessions and torch
    share one GPU."""
    tf = tensorflow_v1()
    config = tf.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    return tf.Session(graph=tf.Graph(), config=config)
