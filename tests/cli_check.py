"""Checks of a command's answer to bad input or a failure (project issue 17), for any script's tests.

    files = Files(tmp_path)                       # every file under the folders, by content
    result = run_main(main.main, argv)           # in this process: fast; or run_script("main.py", ...)
    assert_one_line_error(result, "main.py", "config.yaml", "args.lr")
    files.assert_unchanged()                     # no file that existed changed, none was added

`assert_one_line_error`: a non-zero exit (2 for bad input unless told), exactly one line on stderr,
`<prog>: error: ...` naming every fragment given, and no "Traceback" in anything the command printed.
"""
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# One thread per subprocess: several threads on two shared cores can be many times slower.
SCRIPT_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@dataclass
class Result:
    code: int | None
    out: str
    err: str


def run_main(main, argv, capfd) -> Result:
    """`main(argv)` of a script in this process, with its exit code and what it printed (capfd: pytest's
    fixture, which also sees output written by C code and subprocesses). An exception other than the
    script's exit propagates: the test fails with its traceback, as the command would have."""
    capfd.readouterr()
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capfd.readouterr()
    return Result(code, out, err)


def run_script(script: str, *args, timeout: float = 300, env: dict | None = None) -> Result:
    """`python <script> <args>` from the repository root, as a user runs it."""
    done = subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env or SCRIPT_ENV)
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: Result, prog: str, *fragments: str, code: int = 2, earlier_lines: bool = False):
    """Exit `code`, one line `<prog>: error: ...` containing every fragment, no traceback. With
    `earlier_lines`, the error is the last line of stderr and lines before it (a run's log) are allowed."""
    everything = result.out + result.err
    assert "Traceback" not in everything, everything
    assert result.code == code, f"exit {result.code}, expected {code}:\n{result.err}"
    lines = result.err.strip().splitlines()
    assert lines, "nothing on stderr"
    if not earlier_lines:
        assert len(lines) == 1, result.err
    line = lines[-1]
    assert line.startswith(f"{prog}: error: "), line
    missing = [f for f in fragments if str(f) not in line]
    assert not missing, f"{missing} not in: {line}"
    return line


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Files:
    """The content of some files, and of every file under some folders, when made; `assert_unchanged`
    compares with now."""

    def __init__(self, *roots):
        self.roots = [Path(r) for r in roots]
        self.before = self.read()

    def read(self) -> dict:
        paths = [p for root in self.roots for p in ([root] if root.is_file() else sorted(root.rglob("*")))]
        return {p: _digest(p) for p in paths if p.is_file()}

    def assert_unchanged(self, new_files: bool = False):
        """No file that was there changed or went away; with `new_files` false, none was added either."""
        now = self.read()
        changed = [str(p) for p, digest in self.before.items() if now.get(p) != digest]
        assert not changed, f"changed or removed: {changed}"
        if not new_files:
            added = [str(p) for p in now if p not in self.before]
            assert not added, f"added: {added}"
