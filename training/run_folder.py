"""The output folder of a training run, and the rules that keep every other result safe.

A run folder belongs to one run. A new run (also one continuing another run's checkpoint with
--resume A --output_dir B) writes only into a folder that is new or empty, or that the same run
(the same config.yaml, which a run writes first) left before its first checkpoint; a resumed run
writes into its own folder, and only from that folder's latest checkpoint (an older one would have
it overwrite the epochs after it). All of that is checked before anything is written. While a process
writes the folder it holds its `run_lock` (common/files.py), so two runs of one folder at once are
refused, and under the lock the partial files an interrupted run left are removed: a running
writer's temporary files look the same, and only the lock tells them apart.
"""
import logging
import os
from contextlib import ExitStack
from pathlib import Path

from common.files import atomic_copy, remove_temporaries, run_lock
from common.folders import NAMES_SHOWN, check_is_folder, folder_contents, shown
from models.checkpoint_format import CHECKPOINT_NAME, CONFIG, LAST, epoch_checkpoint_name, load_checkpoint_file
from training.checkpoint import kept_epoch


log = logging.getLogger(__name__)


def check_new_run_folder(folder, config_text: str):
    """A new run's folder: new, empty, or this same run's (config.yaml equal to `config_text`) stopped
    before its first checkpoint, which starts again there. ValueError naming what is there otherwise."""
    folder = Path(folder)
    check_is_folder(folder)
    names = folder_contents(folder)
    if LAST in names:
        raise ValueError(f"{folder} already holds {LAST}: pass --resume {folder} to continue that run, or another "
                         f"--output_dir")
    if not names or (_same_run(folder, config_text) and not any(CHECKPOINT_NAME.match(n) for n in names)):
        return
    whose = " (its config.yaml is another run's)" if CONFIG in names else ""
    raise ValueError(f"--output_dir {folder} is not empty ({shown(names)}){whose}: a new run writes only into a new "
                     f"or empty folder, so that nothing it did not make is overwritten; pass another --output_dir")


def _same_run(folder: Path, config_text: str) -> bool:
    try:
        return (folder / CONFIG).read_text() == config_text
    except (OSError, UnicodeDecodeError):
        return False


def is_own_folder(folder, checkpoint_path) -> bool:
    """Whether `folder` is the folder of the run that wrote `checkpoint_path`."""
    folder = Path(folder)
    return folder.is_dir() and os.path.samefile(folder, Path(checkpoint_path).parent)


def check_resume_point(folder, checkpoint_path, epoch: int):
    """Resuming into its own folder continues from the folder's latest checkpoint only."""
    last = Path(folder) / LAST
    if not last.is_file() or os.path.samefile(last, checkpoint_path):
        return
    last_epoch = load_checkpoint_file(last, mmap=True).get("epoch")  # mmap: no weights read
    if isinstance(last_epoch, int) and last_epoch > epoch:
        raise ValueError(f"{checkpoint_path} is epoch {epoch} but {last} is epoch {last_epoch}: continuing from "
                         f"it in {folder} would overwrite the epochs after {epoch}; pass a new --output_dir to "
                         f"continue it there")


def remove_leftovers(folder):
    """Removes the temporary files an interrupted run left in `folder` and below (only under its lock)."""
    removed = []
    for sub, _, _ in os.walk(folder):
        removed += remove_temporaries(sub)
    if removed:
        log.info("removed %d partial file(s) an interrupted run left: %s", len(removed),
                 ", ".join(str(p) for p in removed[:NAMES_SHOWN]))
    return removed


def restore_kept_checkpoint(folder, checkpoint: dict):
    """checkpoint-<epoch>.pth of the latest epoch when the run was to keep it but was stopped before it was
    made (runs of earlier versions wrote it after checkpoint-last.pth)."""
    folder = Path(folder)
    args, epoch = checkpoint.get("args"), checkpoint.get("epoch")
    epochs, save_freq = getattr(args, "epochs", None), getattr(args, "save_freq", None)
    if not all(isinstance(v, int) and v > 0 for v in (epochs, save_freq)) or not isinstance(epoch, int):
        return
    kept = folder / epoch_checkpoint_name(epoch)
    if kept_epoch(epoch, epochs, save_freq) and not kept.exists():
        atomic_copy(folder / LAST, kept)
        log.info("made %s, which the interrupted run did not", kept)


class RunFolder:
    """The lock of a run folder, held from claiming it until `release`."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self._stack = ExitStack()
        self.held = False

    def lock(self):
        if not self.held:
            self._stack.enter_context(run_lock(self.folder))
            self.held = True

    def release(self):
        self._stack.close()
        self.held = False
