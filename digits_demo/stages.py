"""The demo's stage record, `stages.json` in its output folder: per stage the settings it ran with,
whether it finished, how long it took and the files it wrote (relative to the output folder).

A stage is reused when it finished with the same settings and no earlier stage ran again. Otherwise
it runs again in its folder: an unfinished run with the same settings is resumed, anything else of
the demo's is removed first. The demo removes only what it wrote: while a stage runs, each file it
writes is listed in its journal, `.<stage>.journal` in the output folder, before the file appears
(common/files.py's `journal`), so an interrupted stage, even a killed one, knows its files as a
finished one does. A folder the demo did not make, or a stage's folder holding a file its journal does
not list (one the user put there), stops the demo with one line before anything is removed. Lock files
and partial files of the project's naming (common/files.py) count as the stage's.
"""
import json
import time
from pathlib import Path

from common.files import LOCK_NAME, TEMPORARY_NAME, atomic_write_text, journal, journaled
from common.json_files import read_json

STAGES_FILE = "stages.json"


def log(message: str):
    print(f"[demo] {message}", flush=True)


def _housekeeping(name: str) -> bool:
    """A lock file or a partial file, named as common/files.py names them: a killed run's leftovers."""
    return name == LOCK_NAME or bool(TEMPORARY_NAME.match(name))


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


class Stages:
    def __init__(self, output_dir: Path, force: bool, own_files: tuple[str, ...]):
        """`own_files`: the names the demo writes directly in the output folder; in a folder without
        stages.json (not the demo's) none of them may be there already."""
        self.output_dir = output_dir
        self.path = output_dir / STAGES_FILE
        self.force = force
        if self.path.is_file():
            self.records = read_json(self.path, dict, "the demo's record of its stages")
        else:
            self.records = {}
            there = [output_dir / name for name in own_files if (output_dir / name).exists()]
            if there:
                raise ValueError(f"{there[0]} is there and {output_dir} has no {STAGES_FILE}: it is not the demo's "
                                 f"output folder; choose another --output_dir")
        self.upstream_ran = False
        self.seconds, self.reused = {}, []

    def run(self, name: str, settings: dict, folder: Path, work):
        settings = json.loads(json.dumps(settings))  # as stored: tuples become lists
        record = self.records.get(name, {})
        same = record.get("settings") == settings and not self.upstream_ran and not self.force
        if same and record.get("finished"):
            self.seconds[name], result = record["seconds"], record.get("result")
            self.reused.append(name)
            log(f"{name}: reusing the finished stage ({record['seconds']:.0f} s when it ran)")
            return result
        if not same:
            self._clear(name, record, folder)
        self.records[name] = {"settings": settings, "finished": False}
        self._save()
        start = time.perf_counter()
        self.journal_path(name).touch()  # a stage killed before its first write has an empty list
        with journal(folder, self.journal_path(name)):
            result = work()
        self.seconds[name] = time.perf_counter() - start
        self.records[name].update(finished=True, seconds=self.seconds[name], result=result)
        self._save()
        self.upstream_ran = True
        log(f"{name}: done in {self.seconds[name]:.0f} s")
        return result

    def journal_path(self, name: str) -> Path:
        return self.output_dir / f".{name}.journal"

    def _clear(self, name: str, record: dict, folder: Path) -> None:
        """Removes what the stage's earlier run wrote, after checking that it wrote all of it."""
        journal_path = self.journal_path(name)
        if not folder.exists():
            journal_path.unlink(missing_ok=True)
            return
        if not record:
            raise ValueError(f"{folder} is there and was not made by the demo; move it away or choose another "
                             f"--output_dir")
        if journal_path.is_file():
            own = set(journaled(journal_path))
        elif record.get("finished") and "files" in record:  # what an older demo.py recorded at the end
            own = set(record["files"])
        else:
            raise ValueError(f"{self.path}: stage '{name}' has no journal of the files it wrote ({journal_path}; an "
                             f"older demo.py); remove {folder} yourself or choose another --output_dir")
        present = files_under(folder)
        foreign = [p for p in present if p not in own and not _housekeeping(Path(p).name)]
        if foreign:
            raise ValueError(f"{folder / foreign[0]} was not written by the demo's '{name}' stage, which must run "
                             f"again; move it away or choose another --output_dir")
        for relative in present:
            (folder / relative).unlink()
        for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            sub.rmdir()
        folder.rmdir()
        journal_path.unlink()

    def _save(self):
        atomic_write_text(self.path, json.dumps(self.records, indent=1))
