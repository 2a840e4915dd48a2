"""The layout rules that can be read off the source: no module imports a script (the .py files at the
repository root, and train_ae_codebook's main_*.py), and no library module reads sys.argv or edits
sys.path."""
import ast

import pytest

from conftest import REPO

SCRIPT_FILES = sorted([*REPO.glob("*.py"), *REPO.glob("train_ae_codebook/main_*.py"), REPO / "tools" / "code_report.py"])
SCRIPTS = {".".join(p.relative_to(REPO).with_suffix("").parts) for p in SCRIPT_FILES}
LIBRARY = sorted(p for p in REPO.rglob("*.py")
                 if p not in SCRIPT_FILES and "tests" not in p.relative_to(REPO).parts)


def _imported(path) -> set[str]:
    """Every module an import statement of the file names, with its packages and, for `from a import
    b`, a.b (b may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.ImportFrom) and node.module is None:  # from . import b
            package = ".".join(path.relative_to(REPO).parent.parts)
            modules = [f"{package}.{alias.name}" for alias in node.names]
        else:
            continue
        names |= {".".join(m.split(".")[:i + 1]) for m in modules for i in range(m.count(".") + 1)}
    return names


def test_the_scripts_are_found():
    assert {"main", "main_sample", "demo", "evaluator", "train_ae_codebook.main_train_ae"} <= SCRIPTS
    assert len(LIBRARY) > 40


@pytest.mark.parametrize("path", [*LIBRARY, *SCRIPT_FILES], ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_a_script(path):
    assert not _imported(path) & SCRIPTS


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(REPO)))
def test_library_code_leaves_sys_argv_and_sys_path_alone(path):
    text = path.read_text()
    assert "sys.argv" not in text and "sys.path" not in text


def test_every_library_package_is_installed():
    """pyproject.toml lists the packages `pip install -e .` makes importable from anywhere; a package
    left off works in a checkout and fails for an installed copy."""
    import tomllib
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {p.parent.name for p in REPO.glob("*/__init__.py") if p.parent.name != "tests"}
    assert listed == on_disk
