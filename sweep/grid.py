"""The values a sweep runs over, from their text: guidance weights (`--cfg`) and steps per scale
(`--steps_per_scale`).

Guidance: a list of weights and ranges `a:b:step`, each range inclusive of b when b lies on the
step (1.0:2.0:0.1 gives the eleven weights 1.0, 1.1, ..., 2.0). Ranges are counted in decimal
arithmetic, so every weight is the float of its decimal text (1.2, never 1.2000000000000002) and
the same command gives the same weights, hence the same point folders and rows, on every rerun.

Steps per scale: a list of settings, each one value for every scale (`4`) or one value per scale
joined by slashes (`1/4/4/4/4`; commas separate settings here, as they separate guidance weights).
"""
from decimal import Decimal, InvalidOperation

from common.config import float32_problem

MAX_VALUES = 1000  # more weights than any sweep could run: a typo such as 1:2:0.0001


def _decimal(text: str, where: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{where}: {text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{where}: {text!r} is not a finite number")
    return value


def cfg_range(text: str, where: str = "--cfg") -> list[float]:
    """The weights of one range `a:b:step`, a <= b, step > 0."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"{where}: {text!r} is no range; write start:stop:step, e.g. 1.0:2.0:0.1")
    start, stop, step = (_decimal(p, where) for p in parts)
    if step <= 0:
        raise ValueError(f"{where}: the step of {text!r} must be > 0")
    if stop < start:
        raise ValueError(f"{where}: {text!r} ends below its start")
    count = int((stop - start) / step) + 1
    if count > MAX_VALUES:
        raise ValueError(f"{where}: {text!r} gives {count} weights, more than {MAX_VALUES}")
    return [float(start + i * step) for i in range(count)]


def cfg_values(items, where: str = "--cfg") -> list[float]:
    """Every weight of a list of weights and ranges (numbers or their text), ascending, each once."""
    if not items:
        raise ValueError(f"{where}: no guidance weight given")
    values = []
    for item in items:
        if isinstance(item, str) and ":" in item:
            values += cfg_range(item, where)
        elif isinstance(item, (int, float, str)) and not isinstance(item, bool):
            values.append(float(_decimal(str(item), where)))
        else:
            raise ValueError(f"{where}: {item!r} is neither a weight nor a range")
    bad = [v for v in values if v < 0]
    if bad:
        raise ValueError(f"{where}: guidance weights must be >= 0, got {bad[0]:g}")
    for v in values:
        problem = float32_problem(v)
        if problem:
            raise ValueError(f"{where}: guidance weights must be {problem}, got {v:g}")
    return sorted(set(values))


def steps_setting(item, where: str = "--steps_per_scale"):
    """One setting: an int >= 1, or a tuple of them from `a/b/c`."""
    if isinstance(item, int) and not isinstance(item, bool):
        values = [item]
    elif isinstance(item, (list, tuple)):
        values = list(item)
    elif isinstance(item, str):
        try:
            values = [int(p) for p in item.strip().split("/")]
        except ValueError:
            raise ValueError(f"{where}: {item!r} is not an integer or integers joined by '/' "
                             f"(one per scale, e.g. 1/4/4/4/4)") from None
    else:
        raise ValueError(f"{where}: {item!r} is not an integer or integers joined by '/'")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ValueError(f"{where}: {item!r}: steps must be integers >= 1")
    return values[0] if len(values) == 1 and not isinstance(item, (list, tuple)) else tuple(values)


def steps_settings(items, where: str = "--steps_per_scale") -> list:
    """Every setting of the list, in the order given, each once."""
    if not items:
        raise ValueError(f"{where}: no setting given")
    return list(dict.fromkeys(steps_setting(item, where) for item in items))
