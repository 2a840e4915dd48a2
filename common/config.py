"""Typed configurations: one dataclass per tool, filled from defaults, a YAML section and the command line.

A field is declared with `option(help, default, ...)`; its annotation is its type: bool, int, float, str,
dict, `X | None`, `list[X]` or `X | list[X]`. From the dataclass come

* `make(cls, *layers)`: the defaults, then each `Layer` (a YAML section, the command line, keyword
  arguments) in order; keys are checked (unknown ones refused, aliases mapped to their field), values
  coerced to the field's type and checked against its choices and bounds. Every problem is one
  `ConfigError` line naming where the value came from (`config.yaml: args.lr`, `--lr`), the key and the
  value. The dataclass's own `validate()`, if it has one, then checks what involves several fields.
* `add_arguments(parser, cls)`: one `--name` per field with its help and default; bools as
  `--name/--no-name`; lists as several values or one comma-separated value; aliases as further option
  strings. Only the options given appear in the parsed namespace, so the command line overrides exactly
  what it names.

A field declared with `path=True` is a file or folder: a leading `~` is the user's home, expanded where the
value enters (`expand_path`: the option's argparse type, and `build` for YAML and keyword values), so that a
config's `output_dir: ~/runs` is not a folder literally named `~`.
"""
import argparse
import copy
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from common.cli import fail

NONE_WORDS = ("none", "null")  # on the command line, unset an optional value
FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32: below it 1/x overflows


class ConfigError(ValueError):
    """A bad configuration value or key; the message is the whole story, in one line."""


def option(help: str, default=dataclasses.MISSING, *, choices=None, aliases=(), ge=None, gt=None, le=None,
           lt=None, default_text: str | None = None, cli: bool = True, hidden: bool = False,
           negative_aliases=(), metavar: str | None = None, path: bool = False, float32: bool = False):
    """A config field. `aliases`: further names (YAML keys and --options) of the same field;
    `negative_aliases`: extra --options that set a bool field to false; `ge/gt/le/lt`: bounds of a
    number (of every item of a list); `default_text`: what the default means where the value alone
    would not say it (e.g. None); `cli=False`: not a command-line option; `hidden`: not in --help; `path`:
    a file or folder (each value's leading ~ expanded); `float32`: a number used as a float32 (see
    `float32_problem`)."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "aliases": tuple(aliases),
                "bounds": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None},
                "default_text": default_text, "cli": cli, "hidden": hidden,
                "negative_aliases": tuple(negative_aliases), "metavar": metavar, "path": path,
                "float32": float32}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Kind:
    """A field's type, taken apart: `base` of each value, and whether None or a list is allowed."""

    base: type
    optional: bool = False
    is_list: bool = False  # list[base]
    scalar_or_list: bool = False  # base | list[base]

    @classmethod
    def of(cls, hint) -> "Kind":
        args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        optional = type(None) in args
        args = [a for a in args if a is not type(None)]
        lists = [a for a in args if typing.get_origin(a) is list]
        scalars = [a for a in args if typing.get_origin(a) is not list]
        if lists and scalars:
            (item,) = typing.get_args(lists[0])
            if scalars != [item]:
                raise TypeError(f"unsupported config type {hint}")
            return cls(item, optional, scalar_or_list=True)
        if lists:
            return cls(typing.get_args(lists[0])[0], optional, is_list=True)
        if len(scalars) != 1 or scalars[0] not in (bool, int, float, str, dict):
            raise TypeError(f"unsupported config type {hint}")
        return cls(scalars[0], optional)

    def describe(self) -> str:
        name = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                dict: "a mapping"}[self.base]
        if self.is_list:
            return f"a list of {_plural(self.base)}"
        if self.scalar_or_list:
            return f"{name} or a list of {_plural(self.base)}"
        return name


def _plural(base) -> str:
    return {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}.get(base, "values")


@dataclass
class Layer:
    """Values from one source. `source` names a file ("config.yaml") or None; `prefix` goes before each
    key in messages: "args." for a YAML section, "--" for the command line, "" for keyword arguments."""

    values: dict
    source: str | None = None
    prefix: str = ""
    from_text: bool = False  # command-line strings: "none" unsets an optional value

    def where(self, key: str) -> str:
        return f"{self.source}: {self.prefix}{key}" if self.source else f"{self.prefix}{key}"


def command_line(values: dict) -> Layer:
    return Layer(values, None, "--", from_text=True)


def yaml_section(values: dict | None, source, section: str) -> Layer:
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{source}: the '{section}:' section must be a mapping of keys to values")
    return Layer(values or {}, str(source), f"{section}.")


def fields_of(cls) -> dict:
    return {f.name: f for f in dataclasses.fields(cls)}


def kinds_of(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {name: Kind.of(hints[name]) for name in fields_of(cls)}


def aliases_of(cls) -> dict:
    """alias -> field name."""
    return {alias: name for name, f in fields_of(cls).items() for alias in f.metadata.get("aliases", ())}


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


# ---- values -------------------------------------------------------------------------------------
def coerce(value, kind: Kind, where: str, from_text: bool = False):
    """`value` as the field's type, or ConfigError("<where> must be <type>, got <value>")."""
    if kind.optional and (value is None or (from_text and isinstance(value, str) and value.lower() in NONE_WORDS)):
        return None
    if not (kind.is_list or kind.scalar_or_list):
        return _scalar(value, kind, where, value)
    # A list is a YAML list, several command-line words, or comma-separated text; a single value
    # of a list field is a list of one.
    words = list(value) if isinstance(value, (list, tuple)) else [value]
    commas = any(isinstance(w, str) and "," in w for w in words)
    items = [part for w in words for part in (_split_commas(w) if isinstance(w, str) else [w])]
    single = not commas and (not isinstance(value, (list, tuple)) or (from_text and len(words) == 1))
    if kind.scalar_or_list and single:
        return _scalar(items[0], kind, where, value)
    return [_scalar(v, kind, where, value) for v in items]


def _split_commas(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _scalar(value, kind: Kind, where: str, shown):
    base = kind.base
    if base is bool and isinstance(value, bool):
        return value
    if base is str and isinstance(value, (str, Path)):
        return str(value)
    if base is dict and isinstance(value, dict):
        return value
    if base in (int, float) and not isinstance(value, bool):
        number = _number(value)
        if number is not None and math.isfinite(number):
            if base is float:
                return float(number)
            if float(number).is_integer():
                return int(number)
    raise ConfigError(f"{where} must be {kind.describe()}, got {_show(shown)}")


def _number(value):
    """int or float from a number or its text (YAML reads `1e-4` as a string); None if it is neither."""
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value.strip())
            except ValueError:
                pass
    return None


def _show(value) -> str:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return repr(" ".join(value))  # command-line words as typed
    return repr(value)


def expand_path(text: str) -> str:
    """A path as typed or written in a config, with a leading ~ (or ~user) made the home folder."""
    return os.path.expanduser(text)


def _expanded(value, f: dataclasses.Field):
    if not f.metadata.get("path") or value is None:
        return value
    return [expand_path(v) for v in value] if isinstance(value, list) else expand_path(value)


def float32_problem(value: float) -> str | None:
    """What a number used as a float32 must be, when it is not: finite there, and 0 or normal (a
    subnormal such as 1e-45 has lost its precision, and dividing by it overflows)."""
    if abs(value) > FLOAT32_MAX:
        return f"at most {FLOAT32_MAX:.4g} (the largest float32, which it is used as)"
    if value != 0 and abs(value) < FLOAT32_TINY:
        return f"0 or at least {FLOAT32_TINY:.4g} (the smallest normal float32, which it is used as)"
    return None


def check_value(value, f: dataclasses.Field, where: str):
    """The field's choices and bounds, for a value or every item of a list."""
    items = value if isinstance(value, list) else [value]
    choices = f.metadata.get("choices")
    for item in items:
        if item is None:
            continue
        if choices and item not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}, got {item!r}")
        for op, bound in f.metadata.get("bounds", {}).items():
            ok = {"ge": item >= bound, "gt": item > bound, "le": item <= bound, "lt": item < bound}[op]
            if not ok:
                sign = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[op]
                raise ConfigError(f"{where} must be {sign} {bound}, got {item!r}")
        problem = float32_problem(item) if f.metadata.get("float32") else None
        if problem:
            raise ConfigError(f"{where} must be {problem}, got {item!r}")


# ---- building ------------------------------------------------------------------------------------
def build(cls, *layers: Layer, exclude=()) -> dict:
    """The field values the layers give (later ones win), coerced and checked one by one. `exclude`:
    field names that no layer may set (e.g. a file-name field set by the caller)."""
    fields, kinds, aliases = fields_of(cls), kinds_of(cls), aliases_of(cls)
    values = {}
    for layer in layers:
        seen = {}
        for key, value in (layer.values or {}).items():
            name = aliases.get(key, key)
            if name not in fields or name in exclude:
                raise ConfigError(f"{layer.source + ': ' if layer.source else ''}unknown key "
                                  f"'{layer.prefix}{key}'")
            if name in seen:
                raise ConfigError(f"{layer.where(seen[name])} and {layer.prefix}{key} name the same option: "
                                  f"give one of them")
            seen[name] = key
            where = layer.where(key)
            values[name] = _expanded(coerce(value, kinds[name], where, layer.from_text), fields[name])
            check_value(values[name], fields[name], where)
    missing = [name for name, f in fields.items() if name not in values and default_of(f) is dataclasses.MISSING
               and name not in exclude]
    if missing:
        prefix = layers[-1].prefix if layers else ""
        raise ConfigError(f"{', '.join(prefix + m for m in missing)} must be given")
    return values


def make(cls, *layers: Layer, **fixed):
    """`build`, then the instance with the `fixed` fields added, then its `validate()`."""
    values = build(cls, *layers, exclude=tuple(fixed))
    instance = cls(**values, **fixed)
    validate = getattr(instance, "validate", None)
    if validate is not None:
        validate()
    return instance


def recheck(instance):
    """Types, choices and bounds of every field of an instance made directly (not through `make`): a
    value of another type, or a nan or infinite number, is refused as `make` refuses it."""
    kinds = kinds_of(type(instance))
    for name, f in fields_of(type(instance)).items():
        check_value(coerce(getattr(instance, name), kinds[name], name), f, name)


# ---- command line --------------------------------------------------------------------------------
class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (argparse would print the whole usage before it)."""

    def error(self, message):
        fail(self.prog, f"{message} (see --help)")


def format_default(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value)) if value else "empty"
    return str(value)


def help_text(f: dataclasses.Field) -> str:
    text = f.metadata.get("help", "")
    default = default_of(f)
    if default is dataclasses.MISSING:
        shown = f"({f.metadata.get('default_text') or 'required'})"
    else:
        shown = f"(default: {f.metadata.get('default_text') or format_default(default)})"
    return f"{text} {shown}".strip().replace("%", "%%")


def add_arguments(parser: argparse.ArgumentParser, cls, exclude=()) -> argparse.ArgumentParser:
    """One option per field of `cls` (fields with cli=False or in `exclude` left out)."""
    kinds = kinds_of(cls)
    for name, f in fields_of(cls).items():
        if not f.metadata.get("cli", True) or name in exclude:
            continue
        kind = kinds[name]
        strings = [f"--{name}"] + [f"--{a}" for a in f.metadata.get("aliases", ())]
        hidden = f.metadata.get("hidden")
        kwargs = {"dest": name, "default": argparse.SUPPRESS,
                  "help": argparse.SUPPRESS if hidden else help_text(f)}
        if f.metadata.get("path"):  # before any use, as the scripts read some (--config, --resume) first
            kwargs["type"] = expand_path
        choices = f.metadata.get("choices")
        if kind.base is bool and not (kind.is_list or kind.scalar_or_list):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = f.metadata.get("metavar") or ("{" + ",".join(map(str, choices)) + "}" if choices
                                                              else name.upper())
            if kind.is_list:
                kwargs["nargs"] = "*"
            elif kind.scalar_or_list:
                kwargs["nargs"] = "+"
        parser.add_argument(*strings, **kwargs)
        for negative in f.metadata.get("negative_aliases", ()):
            parser.add_argument(f"--{negative}", dest=name, action="store_false", default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS if hidden else f"the same as --no-{name}")
    return parser


def given_options(parser: argparse.ArgumentParser, argv=None) -> dict:
    """The options present in `argv`, as the strings (or bools) the command line gave."""
    return vars(parser.parse_args(argv))
