"""common/files.py: atomic writes leave the old file or the whole new one, and no temporary behind."""
import errno
import fcntl
import os

import numpy as np
import pytest
import torch

from common import files
from conftest import dead_pid


def _temporaries(folder):
    return [p.name for p in folder.iterdir() if files.TEMPORARY_NAME.match(p.name)]


def test_every_writer_replaces_the_file_whole(tmp_path):
    target = tmp_path / "out.bin"
    target.write_text("old")
    files.atomic_write_text(target, "new text")
    assert target.read_text() == "new text"
    files.atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    files.atomic_torch_save(target, {"w": torch.arange(3)})
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(3))
    files.atomic_write(target, lambda f: np.savez(f, arr_0=np.ones(2)))
    with np.load(target) as data:
        assert data["arr_0"].tolist() == [1.0, 1.0]
    copy = files.atomic_copy(target, tmp_path / "copy.bin")
    assert copy.read_bytes() == target.read_bytes()
    assert _temporaries(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "checkpoint.pth"
    target.write_text("previous")

    def half_then_fail(f):
        f.write(b"partial")
        raise KeyboardInterrupt  # stands for a kill in the middle of torch.save

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(target, half_then_fail)
    assert target.read_text() == "previous" and os.listdir(tmp_path) == ["checkpoint.pth"]


def test_temporary_names_are_unique_and_say_whose_they_are(tmp_path):
    target = tmp_path / "config.yaml"
    names = {files.temporary_path(target).name for _ in range(100)}
    assert len(names) == 100  # two writers of one file, in one process or two, never share a temporary
    match = files.TEMPORARY_NAME.match(names.pop())
    assert match["target"] == "config.yaml" and int(match["pid"]) == os.getpid()
    seen = {}

    def record(f):
        seen["name"] = os.path.basename(f.name)
        f.write(b"x")

    files.atomic_write(target, record)
    assert files.TEMPORARY_NAME.match(seen["name"])["target"] == "config.yaml"


def test_leftover_temporaries_are_only_ours(tmp_path):
    ours = tmp_path / f".shard_0_5.npz.{dead_pid()}-0a1B2c3D.tmp"
    for path in (ours, tmp_path / "shard_0_5.npz", tmp_path / "notes.tmp", tmp_path / ".x.12-short.tmp"):
        path.write_bytes(b"")
    assert files.leftover_temporaries(tmp_path) == [ours]


def test_remove_temporaries_removes_only_ours(tmp_path):
    ours = tmp_path / f".samples.npz.{dead_pid()}-0a1B2c3D.tmp"
    theirs = [tmp_path / "samples.npz", tmp_path / "notes.tmp", tmp_path / ".x.12-short.tmp"]
    for path in (ours, *theirs):
        path.write_bytes(b"")
    assert files.remove_temporaries(tmp_path) == [ours]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in theirs)


def test_a_locked_run_folder_refuses_a_second_holder_and_is_free_after(tmp_path):
    folder = tmp_path / "new" / "run"
    with files.run_lock(folder):
        assert (folder / files.LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with pytest.raises(files.FolderInUse, match=f"run is in use by another run \\(process {os.getpid()}\\)"):
            with files.run_lock(folder):
                pass
    assert os.listdir(folder) == []  # the lock file goes with the lock
    with files.run_lock(folder):
        pass


HOLD = ("import sys, time; from common import files\n"
        "with files.run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    import signal
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(files.FolderInUse, match=f"\\(process {holder.pid}\\)"):
            with files.run_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with files.run_lock(tmp_path):  # the stale file is still there, its lock is not
        pass


# ---------------------------------------------------------------- issue 23: identity by content, not by name


def test_a_new_file_made_meanwhile_by_another_run_is_never_replaced(tmp_path):
    """Two runs writing one new results file: the second to finish is refused and the first one's file
    stays (a check at the start and a replace at the end let both succeed, the file holding the second's)."""
    target = tmp_path / "results.txt"
    files.check_new_file(target, "--output_file")  # the start: nothing there yet

    def the_other_run_finishes_first(f):
        target.write_text("the first run's results\n")
        f.write(b"this run's results\n")

    with pytest.raises(ValueError, match=f"--output_file {target} exists"):
        files.new_file_write(target, the_other_run_finishes_first, "--output_file")
    assert target.read_text() == "the first run's results\n" and os.listdir(tmp_path) == ["results.txt"]
    files.new_file_text(tmp_path / "new.txt", "made\n", "--output_file")
    assert (tmp_path / "new.txt").read_text() == "made\n" and _temporaries(tmp_path) == []


def test_a_new_file_on_a_file_system_without_hard_links(tmp_path, monkeypatch):
    def no_hard_links(*args):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_hard_links)
    files.new_file_text(tmp_path / "new.txt", "made\n", "--save_stats")
    assert (tmp_path / "new.txt").read_text() == "made\n"
    with pytest.raises(ValueError, match="--save_stats .*new.txt exists"):
        files.new_file_text(tmp_path / "new.txt", "again\n", "--save_stats")
    assert (tmp_path / "new.txt").read_text() == "made\n" and _temporaries(tmp_path) == []


def test_temporaries_of_dead_writers_are_reaped_by_the_next_write_and_live_ones_kept(tmp_path):
    """A killed writer's partial file goes at the next write into its folder, whoever writes there;
    pretrained_models/download.sh's partial downloads (named with the shell's pid) alike."""
    dead = dead_pid()
    killed = tmp_path / f".results.txt.{dead}-0a1b2c3d.tmp"  # this module's, its writer killed
    download = tmp_path / f".checkpoint-last.pth.{dead}-00ff12ab.tmp"  # download.sh's, killed
    running_here = tmp_path / f".samples.npz.{os.getpid()}-0a1b2c3d.tmp"  # its pid lives
    running_elsewhere = tmp_path / f".grid.png.{dead}-9z8y7x6w.tmp"  # flocked by a writer on another machine
    for path in (killed, download, running_here, running_elsewhere):
        path.write_bytes(b"partial")
    with open(running_elsewhere, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        files.atomic_write_text(tmp_path / "other.txt", "x")
        assert sorted(_temporaries(tmp_path)) == sorted([running_here.name, running_elsewhere.name])
    assert files.remove_temporaries(tmp_path) == [running_elsewhere]
    assert _temporaries(tmp_path) == [running_here.name]


def test_a_temporary_is_held_while_it_is_written(tmp_path):
    """(by an flock: a writer on another machine sharing the folder has a pid unknown here)"""
    seen = {}

    def write(f):
        fd = os.open(f.name, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            seen["held"] = False
        except BlockingIOError:
            seen["held"] = True
        finally:
            os.close(fd)

    files.atomic_write(tmp_path / "a.bin", write)
    assert seen["held"]


def test_a_journal_lists_the_files_written_under_its_folder(tmp_path):
    folder, journal_path = tmp_path / "stage", tmp_path / ".stage.journal"
    (folder / "sub").mkdir(parents=True)
    with files.journal(folder, journal_path):
        files.atomic_write_text(folder / "a.txt", "a")
        files.atomic_write_text(folder / "sub" / "b.txt", "b")
        files.atomic_write_text(folder / "a.txt", "again")  # listed once
        files.journal_file(folder / "log.jsonl")  # a writer of its own announces its file
        files.atomic_write_text(tmp_path / "outside.txt", "not the stage's")
    files.atomic_write_text(folder / "after.txt", "after the block")
    assert files.journaled(journal_path) == ["a.txt", os.path.join("sub", "b.txt"), "log.jsonl"]
    with files.journal(folder, journal_path):  # a resumed piece of work adds to its list
        files.atomic_write_text(folder / "c.txt", "c")
    assert files.journaled(journal_path)[-1] == "c.txt"
