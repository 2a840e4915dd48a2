"""No import cycle in the project: the graph of every module of the repository's packages and of
its top-level scripts, with an edge for each import statement that names another of them, at
module level or inside a function (a function-level import is a cycle that waits for its call)."""
from conftest import REPO
from tools.import_graph import describe, find_cycles, import_graph


def test_the_graph_holds_every_package_and_script():
    graph = import_graph(REPO)
    assert {"main", "demo", "evaluator", "evaluation.features", "evaluation.digits_features", "sweep.results",
            "train_ae_codebook.main_train_ae", "models.sampler"} <= set(graph)
    assert not any(name.startswith("tests") for name in graph)
    # a function-level import is an edge: load_features imports the digits network when asked for it
    assert "evaluation.digits_features" in graph["evaluation.features"]
    assert "sweep.results" in graph["sweep.run"] and "evaluation.features" in graph["sweep.results"]


def test_no_import_cycle():
    graph = import_graph(REPO)
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(describe(c, graph) for c in cycles)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.sub.b import f\nX = 1\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("def f():\n    from ..a import X\n    return X\n")
    (tmp_path / "pkg" / "c.py").write_text("import pkg.a\nfrom pkg import sub\n")
    (tmp_path / "script.py").write_text("from pkg import c\n")
    graph = import_graph(tmp_path)
    assert graph == {"script": {"pkg.c": "script.py:1"}, "pkg": {}, "pkg.sub": {},
                     "pkg.a": {"pkg.sub.b": "pkg/a.py:1"}, "pkg.sub.b": {"pkg.a": "pkg/sub/b.py:2"},
                     "pkg.c": {"pkg.a": "pkg/c.py:1", "pkg.sub": "pkg/c.py:2"}}
    (cycle,) = find_cycles(graph)
    assert describe(cycle, graph) == "pkg.a (pkg/a.py:1) -> pkg.sub.b (pkg/sub/b.py:2) -> pkg.a"
    (tmp_path / "pkg" / "sub" / "b.py").write_text("def f():\n    return 1\n")
    assert find_cycles(import_graph(tmp_path)) == []
