"""The GitHub Actions workflow runs the repository's check (.ci/run) on every push and pull request,
with the Python the project is set up with (README's set-up line, pyproject's requires-python)."""
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def _steps() -> list[dict]:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    return [step for job in jobs.values() for step in job["steps"]]


def test_the_workflow_runs_ci_run_on_push_and_pull_request():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the bare key `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    steps = _steps()
    assert steps[0]["uses"].startswith("actions/checkout@")
    assert [step["run"] for step in steps if "run" in step] == ["bash .ci/run"]
    assert (REPO / ".ci" / "run").is_file()


def test_the_workflow_s_python_is_the_project_s():
    versions = [step["with"]["python-version"] for step in _steps()
                if step.get("uses", "").startswith("actions/setup-python@")]
    readme = re.search(r"Set up \(Python (\d+\.\d+)", (REPO / "README.md").read_text()).group(1)
    assert versions == [readme]
    minimum = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (REPO / "pyproject.toml").read_text()).groups()
    assert tuple(map(int, readme.split("."))) >= tuple(map(int, minimum))
    assert readme == f"{sys.version_info.major}.{sys.version_info.minor}"  # the tests run on that Python too
