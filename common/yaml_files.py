"""Reading YAML files (configs): the one `yaml.safe_load` of the project.

safe_load builds plain mappings, lists, strings and numbers; a tag asking for a Python object is
refused. A file that is missing, a folder, not text or not valid YAML is one `ValueError` or
`OSError` line naming the file and, for syntax errors, the line and column.
"""
from pathlib import Path

import yaml


class YAMLFileError(ValueError):
    """A file that is not valid YAML; the message names the file and where the problem is."""


def _where(mark) -> str:
    return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def load_yaml(path, what: str = "config"):
    """The document in the YAML file at `path`. `what` names the kind of file in messages."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise IsADirectoryError(f"{what} {path} is a folder, not a file")
    with open(path, "rb") as f:  # bytes: YAML detects UTF-8 / UTF-16 itself
        try:
            return yaml.safe_load(f)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            problem = e.problem or e.context or "invalid YAML"
            context = f" ({e.context})" if e.context and e.problem else ""
            raise YAMLFileError(f"{path}{_where(mark)}: {problem}{context}") from None
        except yaml.YAMLError as e:  # e.g. a byte that is not text
            raise YAMLFileError(f"{path}: not a YAML text file ({' '.join(str(e).split())})") from None
