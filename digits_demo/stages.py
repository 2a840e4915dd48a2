"""The demo's stage record, `stages.json` in its output folder: per stage the settings it ran with,
whether it finished, how long it took and the files it wrote (relative to the output folder).

A stage is reused when it finished with the same settings and no earlier stage ran again. Otherwise
it runs again in its folder: an unfinished run with the same settings is resumed, anything else of
the demo's is removed first. The demo removes only what it wrote: a folder it did not make, or a
finished stage's folder holding a file the stage did not write, stops the demo with one line before
anything is removed. (An interrupted stage has no list of its files: its folder, which the demo made
for it, is taken to hold only what it wrote before the interruption.)
"""
import json
import time
from pathlib import Path

from common.files import atomic_write_text
from common.json_files import read_json

STAGES_FILE = "stages.json"


def log(message: str):
    print(f"[demo] {message}", flush=True)


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
        result = work()
        self.seconds[name] = time.perf_counter() - start
        self.records[name].update(finished=True, seconds=self.seconds[name], result=result,
                                  files=files_under(folder) if folder.is_dir() else [])
        self._save()
        self.upstream_ran = True
        log(f"{name}: done in {self.seconds[name]:.0f} s")
        return result

    def _clear(self, name: str, record: dict, folder: Path) -> None:
        """Removes what the stage's earlier run wrote, after checking that it wrote all of it."""
        if not folder.exists():
            return
        if not record:
            raise ValueError(f"{folder} is there and was not made by the demo; move it away or choose another "
                             f"--output_dir")
        present = files_under(folder)
        if record.get("finished"):
            if "files" not in record:
                raise ValueError(f"{self.path}: stage '{name}' has no list of the files it wrote (an older demo.py); "
                                 f"remove {folder} yourself or choose another --output_dir")
            foreign = sorted(set(present) - set(record["files"]))
            if foreign:
                raise ValueError(f"{folder / foreign[0]} was not written by the demo's '{name}' stage, which must run "
                                 f"again; move it away or choose another --output_dir")
        for relative in present:
            (folder / relative).unlink()
        for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            sub.rmdir()
        folder.rmdir()

    def _save(self):
        atomic_write_text(self.path, json.dumps(self.records, indent=1))
