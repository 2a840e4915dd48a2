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
from datetime import datetime
from pathlib import Path

from common.distributed import broadcast_object, get_rank
from common.files import remove_temporaries, run_lock
from common.folders import NAMES_SHOWN, check_is_folder, folder_contents, shown
from models.checkpoint import checkpoint_paths
from models.checkpoint_format import CHECKPOINT_NAME, CONFIG, LAST
from training.checkpoint import Resumed, check_resume_point, load_training_checkpoint, restore_kept_checkpoint
from training.config import TrainConfig


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


def remove_leftovers(folder):
    """Removes the temporary files an interrupted run left in `folder` and below (only under its lock)."""
    removed = []
    for sub, _, _ in os.walk(folder):
        removed += remove_temporaries(sub)
    if removed:
        log.info("removed %d partial file(s) an interrupted run left: %s", len(removed),
                 ", ".join(str(p) for p in removed[:NAMES_SHOWN]))
    return removed


def new_run_dir(output_root) -> Path:
    """<output_root>/<yymmdd-HHMM>-<8 hex digits> (the published run id), drawn by process 0 and shared;
    never an existing folder."""
    path = None
    if get_rank() == 0:
        while path is None or path.exists():
            path = Path(output_root) / f"{datetime.now():%y%m%d-%H%M}-{os.urandom(4).hex()}"
    return Path(broadcast_object(str(path) if path else None))


def claim_run_folder(config: TrainConfig, config_text: str) -> tuple["RunFolder", Resumed | None]:
    """The run folder `config.output_dir`, checked for this run (`config_text`: its config.yaml), and the
    checkpoint it resumes from (None for a new run). A resumed run's own folder is locked by process 0
    before its checkpoint is read: another resume of this folder may be writing it."""
    own = bool(config.resume) and is_own_folder(config.output_dir, checkpoint_paths(config.resume)[0])
    if not own:
        check_new_run_folder(config.output_dir, config_text)
    folder = RunFolder(config.output_dir, own, config_text)
    try:
        if own and get_rank() == 0:
            folder.lock()
        if not config.resume:
            return folder, None
        resumed = Resumed(*load_training_checkpoint(config.resume, resume=True))
        if own:
            check_resume_point(folder.folder, resumed.path, resumed.state["epoch"])
        return folder, resumed
    except BaseException:
        folder.release()
        raise


class RunFolder:
    """The lock of a run folder, held from claiming it until `release`. `own`: the folder of the run
    resumed; `config_text`: this run's config.yaml."""

    def __init__(self, folder, own: bool, config_text: str):
        self.folder = Path(folder)
        self.own = own
        self.config_text = config_text
        self._stack = ExitStack()
        self.held = False

    def start_writing(self, resumed: Resumed | None):
        """Process 0's first write. A new folder is claimed now, and checked again under its lock: another
        run may have started there since the first check. The partial files an interrupted run left are
        removed, and the kept checkpoint it was stopped before making is made."""
        self.lock()
        if not self.own:
            check_new_run_folder(self.folder, self.config_text)
        remove_leftovers(self.folder)
        if resumed is not None and self.own and os.path.samefile(resumed.path, self.folder / LAST):
            restore_kept_checkpoint(self.folder, resumed.state)

    def lock(self):
        if not self.held:
            self._stack.enter_context(run_lock(self.folder))
            self.held = True

    def release(self):
        self._stack.close()
        self.held = False
