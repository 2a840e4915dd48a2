"""How the code is laid out, measured: for reviews of the project's structure (issue 22's before/after).

    python tools/code_report.py                    # import cycles, longest functions, what each script imports
    python tools/code_report.py --trace main.py --config c.yaml --data_path d --output_dir o
                                                   # also: the project modules a real run calls into

The static part reads the tree with `ast` (tools/import_graph.py: module-level and function-level imports
both count). The trace runs a script
in this process under `sys.setprofile` and records each call that goes from one project module into
another, which is what a reader follows when stepping through a run.
"""
import argparse
import ast
import contextlib
import json
import runpy
import sys
from collections import defaultdict
from pathlib import Path

from import_graph import find_cycles, import_graph, project_modules

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("main.py", "main_sample.py", "main_sweep.py", "evaluator.py", "demo.py", "app.py")


def closure(graph: dict[str, set[str]], start: str) -> list[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return sorted(seen)


def longest_functions(root: Path, count: int) -> list[dict]:
    rows = []
    for name, path in project_modules(root).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append({"lines": node.end_lineno - node.lineno + 1, "function": node.name,
                             "where": f"{path.relative_to(root)}:{node.lineno}"})
    return sorted(rows, key=lambda row: (-row["lines"], row["where"]))[:count]


def trace_run(root: Path, argv: list[str]) -> dict:
    """Run the script argv[0] with argv[1:] here and record the project modules it calls
    into (in the order first called) and the distinct caller -> callee module pairs."""
    files = {str(path.resolve()): name for name, path in project_modules(root).items()}
    entered, edges = [], defaultdict(int)

    def profile(frame, event, _arg):
        if event != "call":
            return
        callee = files.get(frame.f_code.co_filename)
        if callee is None or frame.f_code.co_name == "<module>":  # an import, not a call
            return
        if callee not in entered:
            entered.append(callee)
        caller_frame = frame.f_back
        while caller_frame is not None and caller_frame.f_code.co_filename not in files:
            caller_frame = caller_frame.f_back  # through library code (torch, argparse) to our caller
        caller = files.get(caller_frame.f_code.co_filename) if caller_frame else None
        if caller and caller != callee:
            edges[(caller, callee)] += 1

    script = str((root / argv[0]).resolve())
    sys.argv = [script, *argv[1:]]
    sys.path.insert(0, str(root))
    sys.setprofile(profile)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the report owns stdout
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
    finally:
        sys.setprofile(None)
    return {"command": " ".join(argv), "modules_called": len(entered), "modules": entered,
            "cross_module_call_edges": len(edges),
            "edges": [f"{a} -> {b}" for a, b in sorted(edges)]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout to measure (default: this one)")
    parser.add_argument("--longest", type=int, default=10, help="how many of the longest functions to list")
    parser.add_argument("--trace", nargs=argparse.REMAINDER, help="a script and its arguments to run and trace")
    args = parser.parse_args()
    root = args.root.resolve()
    graph = import_graph(root)
    report = {
        "import_cycles": find_cycles(graph),
        "longest_functions": longest_functions(root, args.longest),
        "imports_of_scripts": {script: closure(graph, script[:-3]) for script in SCRIPTS
                               if (root / script).is_file()},
    }
    if args.trace:
        report["trace"] = trace_run(root, args.trace)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
