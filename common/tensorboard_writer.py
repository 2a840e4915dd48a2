"""TensorBoard event files, written without importing TensorFlow: the training loop's records
(training/metrics_log.py) and the autoencoder training's (train_ae_codebook/training.py)."""
import os
import sys
import types
from pathlib import Path

from common.files import journal_file


def summary_writer(log_dir):
    """A torch SummaryWriter of `log_dir`."""
    # tensorboard imports TensorFlow when it is installed (evaluator.py needs tensorflow-cpu): seconds
    # of start-up and log noise for nothing, as its bundled stub writes event files just as well.
    # The `notf` marker module is tensorboard's own switch for the stub.
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(log_dir)
    before = set(os.listdir(log_dir)) if log_dir.is_dir() else set()
    writer = SummaryWriter(log_dir=str(log_dir))
    for name in sorted(set(os.listdir(log_dir)) - before):  # the events file, named by the library
        journal_file(log_dir / name)
    return writer
