"""Reading JSON files (run records, reports, result tables, dataset listings): the one `json.loads`
of a file in the project.

A file that is not UTF-8 text, not valid JSON, or whose top-level value is not of the kind its
reader expects is one `ValueError` naming the file.
"""
import json
from pathlib import Path


def read_json(path, expected: type | None = None, what: str = ""):
    """The value in the JSON file at `path`. `expected` (dict or list): the kind of value the file must
    hold; `what` says in messages what such a file is (e.g. "a sampling run's record")."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes())
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if expected is not None and not isinstance(value, expected):
        raise ValueError(f"{path} is not {what or 'a JSON ' + expected.__name__}")
    return value
