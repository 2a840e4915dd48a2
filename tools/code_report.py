"""How the code is laid out, measured: for reviews of the project's structure (issue 22's before/after).

    python tools/code_report.py                    # import cycles, longest functions, what each script imports
    python tools/code_report.py --trace main.py --config c.yaml --data_path d --output_dir o
                                                   # also: the project modules a real run calls into

The static part reads the tree with `ast` (module-level and function-level imports both count: a cycle
through a function-level import is still a cycle a reader has to hold in mind). The trace runs a script
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

REPO = Path(__file__).resolve().parents[1]
SKIPPED_PARTS = {"tests", "tools", ".git", "build", "outputs", "pretrained_models"}
SCRIPTS = ("main.py", "main_sample.py", "main_sweep.py", "evaluator.py", "demo.py", "app.py")


def project_files(root: Path) -> dict[str, Path]:
    """Module name -> file, for the repository's own code (not tests or tools)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIPPED_PARTS & set(rel.parts) or any(p.startswith(".") or p.endswith(".egg-info") for p in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(path: Path, name: str, modules: dict) -> set[str]:
    """The project modules `path` imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            # `import a.b.c` also runs a and a.b: the innermost project module named is the one used
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = project_files(root)
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


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
    for name, path in project_files(root).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append({"lines": node.end_lineno - node.lineno + 1, "function": node.name,
                             "where": f"{path.relative_to(root)}:{node.lineno}"})
    return sorted(rows, key=lambda row: (-row["lines"], row["where"]))[:count]


def trace_run(root: Path, argv: list[str]) -> dict:
    """Run the script argv[0] with argv[1:] here and record the project modules it calls
    into (in the order first called) and the distinct caller -> callee module pairs."""
    files = {str(path.resolve()): name for name, path in project_files(root).items()}
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
    parser.add_argument("--longest", type=int, default=10, help="how many of the longest functions to list")
    parser.add_argument("--trace", nargs=argparse.REMAINDER, help="a script and its arguments to run and trace")
    args = parser.parse_args()
    graph = import_graph(REPO)
    report = {
        "import_cycles": cycles(graph),
        "longest_functions": longest_functions(REPO, args.longest),
        "imports_of_scripts": {script: closure(graph, script[:-3]) for script in SCRIPTS
                               if (REPO / script).is_file()},
    }
    if args.trace:
        report["trace"] = trace_run(REPO, args.trace)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
