"""TensorBoard event files, written without importing TensorFlow: the training loop's records
(training/metrics_log.py) and the autoencoder training's (train_ae_codebook/training.py)."""
import sys
import types


def summary_writer(log_dir):
    """A torch SummaryWriter of `log_dir`."""
    # tensorboard imports TensorFlow when it is installed (evaluator.py needs tensorflow-cpu): seconds
    # of start-up and log noise for nothing, as its bundled stub writes event files just as well.
    # The `notf` marker module is tensorboard's own switch for the stub.
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))
