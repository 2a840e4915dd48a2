"""Reading YAML files (configs): the one YAML reader of the project, `load_yaml`.

It reads as `yaml.safe_load` does (plain mappings, lists, strings and numbers; a tag asking for a
Python object is refused) and refuses besides what safe_load lets through silently or answers by
hanging: a key given twice in one mapping (safe_load keeps the last one, so a second `epochs:` or a
second `args:` section would quietly replace the first), aliases (`*name`) that repeat more than
MAX_ALIAS_VALUES values in all (a few lines of nested aliases can stand for billions of values, which
whatever walks the document then expands), an alias inside the collection it names (a document that
contains itself) and nesting deeper than MAX_DEPTH. A file that is missing, a folder, not text or not
valid YAML is one `ValueError` or `OSError` line naming the file and, where the text is at fault, the
line and column.
"""
from pathlib import Path

import yaml
from yaml.composer import ComposerError

MAX_ALIAS_VALUES = 1000  # the project's configs use no aliases; a hand-written one repeats a few sections
MAX_DEPTH = 100  # the configs nest four levels; PyYAML itself recurses per level


class YAMLFileError(ValueError):
    """A file that is not valid YAML; the message names the file and where the problem is."""


class StrictLoader(yaml.SafeLoader):
    """safe_load's loader, refusing duplicate keys, alias bombs, self-containing aliases and deep nesting
    while the document is composed (before any value is built)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.alias_values = 0  # values repeated through aliases so far
        self.depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = getattr(node, "values_in_it", None)
            if size is None:  # still being composed: the alias is inside it
                raise ComposerError(None, None, f"alias *{event.anchor} refers to a collection that holds it",
                                    event.start_mark)
            self.alias_values += size
            if self.alias_values > MAX_ALIAS_VALUES:
                raise ComposerError(None, None, f"aliases repeat more than {MAX_ALIAS_VALUES} values "
                                    f"(*{event.anchor} here); write the values out", event.start_mark)
            return node
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        node = super().compose_node(parent, index)
        self.depth -= 1
        node.values_in_it = 1 + sum(child.values_in_it for child in _children(node))
        return node

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        first = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                seen = first.setdefault((key.tag, key.value), key)
                if seen is not key:
                    raise ComposerError(None, None, f"key '{key.value}' given twice (first on line "
                                        f"{seen.start_mark.line + 1})", key.start_mark)
        return node


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


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
            loader = StrictLoader(f)  # reads the first bytes: an error here is the file's too
            try:
                return loader.get_single_data()
            finally:
                loader.dispose()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            problem = e.problem or e.context or "invalid YAML"
            context = f" ({e.context})" if e.context and e.problem else ""
            raise YAMLFileError(f"{path}{_where(mark)}: {problem}{context}") from None
        except yaml.YAMLError as e:  # e.g. a byte that is not text
            raise YAMLFileError(f"{path}: not a YAML text file ({' '.join(str(e).split())})") from None
