"""README.md against the code: the demo's numbers are docs/demo_report.json's, and the Python API
snippet runs as written (on the tiny_2x fixture instead of the published checkpoint)."""
import json
import re

import pytest

from digits_demo import readme

REPO = readme.Path(__file__).resolve().parents[2]


def test_the_readme_s_demo_numbers_are_the_committed_report_s():
    report = json.loads((REPO / readme.REPORT_COPY).read_text())
    assert readme.readme_paragraph(REPO / "README.md") == readme.numbers_paragraph(report)
    assert not report["reused_stages"] and report["run"]["commit"] not in ("unknown", None)


def test_publish_writes_the_numbers_and_refuses_a_partial_run(tmp_path):
    repo, out = tmp_path / "repo", tmp_path / "out"
    (repo / "docs").mkdir(parents=True)
    out.mkdir()
    (repo / "README.md").write_text(f"# x\n{readme.BEGIN}\nold numbers\n{readme.END}\nrest\n")
    report = json.loads((REPO / readme.REPORT_COPY).read_text())
    report["classifier"]["generated_accuracy"] = 0.5
    (out / "report.json").write_text(json.dumps(report))
    (out / "grid.png").write_bytes(b"png")
    readme.publish(out, repo)
    text = (repo / "README.md").read_text()
    assert text.startswith(f"# x\n{readme.BEGIN}\n") and text.endswith(f"{readme.END}\nrest\n")
    assert readme.readme_paragraph(repo / "README.md") == readme.numbers_paragraph(report)
    assert "50.0% of the" in " ".join(text.split()) and max(map(len, text.splitlines())) <= 100
    assert (repo / "docs" / "demo_grid.png").read_bytes() == b"png"
    report["reused_stages"] = ["data"]
    (out / "report.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match="the stages data were reused"):
        readme.publish(out, repo)


def test_the_readme_s_study_numbers_are_the_committed_study_report_s():
    report = json.loads((REPO / readme.STUDY_REPORT_COPY).read_text())
    block = readme.readme_paragraph(REPO / "README.md", readme.STUDY_BEGIN, readme.STUDY_END)
    assert block == " ".join(readme.study_block(report).split())
    assert not report["reused_stages"] and report["run"]["commit"] not in ("unknown", None)
    assert report["run"]["command"].startswith("python demo.py --study")
    for copy in readme.STUDY_COPIES.values():
        assert (REPO / "docs" / copy).is_file() and f"docs/{copy}" in (REPO / "README.md").read_text()


def test_publish_study_writes_the_numbers_and_refuses_a_partial_run(tmp_path):
    repo, out = tmp_path / "repo", tmp_path / "out"
    (repo / "docs").mkdir(parents=True)
    (out / "study").mkdir(parents=True)
    (repo / "README.md").write_text(f"# x\n{readme.BEGIN}\ndemo\n{readme.END}\n{readme.STUDY_BEGIN}\nold\n"
                                    f"{readme.STUDY_END}\nrest\n")
    report = json.loads((REPO / readme.STUDY_REPORT_COPY).read_text())
    report["best"][0]["digits_fid"] = 1234.5
    (out / "study_report.json").write_text(json.dumps(report))
    for name in readme.STUDY_COPIES:
        (out / "study" / name).write_bytes(name.encode())
    readme.publish_study(out, repo)
    text = (repo / "README.md").read_text()
    assert text.startswith(f"# x\n{readme.BEGIN}\ndemo\n{readme.END}\n{readme.STUDY_BEGIN}\n")
    assert text.endswith(f"{readme.STUDY_END}\nrest\n") and "| 1234.5 |" in text
    assert readme.readme_paragraph(repo / "README.md", readme.STUDY_BEGIN, readme.STUDY_END) == " ".join(
        readme.study_block(report).split())
    for name, copy in readme.STUDY_COPIES.items():
        assert (repo / "docs" / copy).read_bytes() == name.encode()
    report["reused_stages"] = ["generator"]
    (out / "study_report.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match="the stages generator were reused"):
        readme.publish_study(out, repo)


def test_the_python_api_snippet_runs_as_written(tiny_dir, monkeypatch):
    text = (REPO / "README.md").read_text()
    snippet = re.search(r"## Python API\n\n```python\n(.*?)```", text, re.S).group(1)
    assert '"pretrained_models/checkerboard-L-2x"' in snippet and 'device="cuda"' in snippet
    # The published L-2x on a GPU, as written; here the tiny fixture on the CPU, with its classes.
    code = (snippet.replace('"pretrained_models/checkerboard-L-2x"', repr(str(tiny_dir)))
            .replace('"cuda"', '"cpu"').replace("[207, 360]", "[2, 7]"))
    namespace = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    out = namespace["out"]
    assert out.images.shape[:2] == (2, 3) and out.images.min() >= -1 and out.images.max() <= 1
    assert len(out.tokens) == len(namespace["model"].scale_sizes)


def _commands(script: str) -> list[list[str]]:
    """The arguments of every `script` command in the README's indented code blocks (continuation
    lines joined, comments dropped)."""
    import shlex

    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        command = line.split(" #")[0].strip()
        if not line.startswith("    ") or not command.startswith(("python ", "torchrun ")):
            continue
        words = shlex.split(command)
        if script in words:
            found.append(words[words.index(script) + 1:])
    return found


@pytest.mark.parametrize("script", ["main_sample.py", "demo.py", "main_sweep.py", "app.py"])
def test_the_readme_s_commands_parse(script):
    """Every option of the README's sampling, demo, sweep and app commands exists and takes the value given."""
    import app
    import demo
    import main_sample
    import main_sweep
    from common.config import command_line, given_options, make
    from digits_demo.config import DemoConfig
    from interactive.config import AppConfig
    from sampling.config import SampleConfig
    from sweep.config import SweepConfig

    parser, cls = {"main_sample.py": (main_sample.get_args_parser, SampleConfig),
                   "demo.py": (demo.get_args_parser, DemoConfig),
                   "main_sweep.py": (main_sweep.get_args_parser, SweepConfig),
                   "app.py": (app.get_args_parser, AppConfig)}[script]
    commands = _commands(script)
    assert len(commands) >= 2
    for argv in commands:
        values = given_options(parser(), argv)
        values.pop("calculate_flops", None)
        make(cls, command_line(values))


def test_the_sweep_snippet_runs_as_written(tiny_dir, tmp_path):
    text = (REPO / "README.md").read_text()
    snippet = re.search(r"From Python, the same run is .*?```python\n(.*?)```", text, re.S).group(1)
    # 50,000 samples of the published L-2x on a GPU, as written; here 10 of the tiny fixture's on the CPU.
    code = (snippet.replace('"pretrained_models/checkerboard-L-2x"', repr(str(tiny_dir)))
            .replace('"cuda"', '"cpu"').replace("fid=True", "fid=True, num_samples=10, shard_size=5")
            .replace('f"samples/sweep/', f'f"{tmp_path}/'))
    exec(compile(code, "README.md (sweep)", "exec"), {})
    for cfg in (1.25, 1.5, 2.0):
        record = json.loads((tmp_path / f"cfg{cfg}" / "sampling.json").read_text())
        assert record["cfg"] == cfg and record["label_mode"] == "balanced" and record["num_samples"] == 10
        assert (tmp_path / f"cfg{cfg}" / "samples.npz").is_file()
