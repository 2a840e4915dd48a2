"""The project's import graph, read with `ast`: every module of the repository's packages and its
top-level scripts, with an edge for each import statement that names another of them, at module level
or inside a function (a function-level import is a cycle that waits for its call). Used by
tests/scripts/test_import_graph.py and tools/code_report.py."""
import ast
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path) -> dict:
    """{module name: path}: the scripts at the root and every module of each package (a folder with
    an __init__.py at the root; tests/ is not one)."""
    files = list(root.glob("*.py"))
    for init in root.glob("*/__init__.py"):
        if init.parent.name != "tests":
            files += init.parent.rglob("*.py")
    return {module_name(root, path): path for path in files}


def _imports(name: str, path: Path):
    """(candidates, line) for each imported name of the file: `import a.b` gives (a.b,); `from a
    import b` gives (a.b, a): b is a module, or a name defined in a."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield (alias.name,), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import b, from ..a import b
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                yield (f"{base}.{alias.name}", base), node.lineno


def import_graph(root: Path) -> dict:
    """{module: {imported project module: "file:line" of its first import}}. Only what a statement
    names is an edge, not the packages Python runs on the way (a module of a package whose
    __init__ imports it is no cycle)."""
    modules = project_modules(root)
    graph = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for candidates, line in _imports(name, path):
            imported = next((c for c in candidates if c in modules), candidates[-1])
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]  # `import a.b.c` where only a.b is ours
            if imported and imported != name:
                edges.setdefault(imported, f"{path.relative_to(root)}:{line}")
    return graph


def find_cycles(graph: dict) -> list:
    """One cycle per back edge of a depth-first walk, each as [m0, m1, ..., m0]; [] when there is none."""
    cycles, state, stack = [], {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for imported in graph[module]:
            if state.get(imported) == "open":
                cycles.append(stack[stack.index(imported):] + [imported])
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def describe(cycle: list, graph: dict) -> str:
    return " -> ".join(f"{a} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"
