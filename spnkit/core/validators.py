"""attrs validators shared by the recipe's sections and every plugin's ``Options``.

Each raises ``ValueError("'FIELD' must be RULE, got VALUE")``; the recipe reader shows the
field's path instead of its name, so a user reads ``train.steps: must be >= 0, got -1``. Each
also carries its RULE as ``.rule``, which the option reference (``spnkit options``) shows as the
field's valid range; a validator of a plugin's own gets one with ``@rule("...")``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

Validator = Callable[[Any, Any, Any], None]


def rule(text: str) -> Callable[[Validator], Validator]:
    """Decorate a validator with the valid range it checks, in words (``.rule``)."""

    def describe(validator: Validator) -> Validator:
        validator.rule = text
        return validator

    return describe


def at_least(bound: float, note: str = "") -> Validator:
    """``value >= bound`` (``note``, e.g. ``"0: no averaging"``, is added to the message)."""
    return _rule(lambda v: v >= bound, f">= {bound}", note)


def above(bound: float, note: str = "") -> Validator:
    """``value > bound``."""
    return _rule(lambda v: v > bound, f"> {bound}", note)


def up_to(bound: int) -> Validator:
    """``1 <= value <= bound``: a count or width with a ceiling far above any real model, so a
    typo such as ``layers = 10000000`` is an error line rather than hours of building."""
    return in_range(1, bound, closed_high=True)


def at_most(bound: float, note: str = "") -> Validator:
    """``value <= bound``."""
    return _rule(lambda v: v <= bound, f"<= {bound}", note)


def in_range(low: float, high: float, closed_high: bool = False, note: str = "") -> Validator:
    """``low <= value < high`` (``<= high`` when ``closed_high``)."""
    if closed_high:
        return _rule(lambda v: low <= v <= high, f"in [{low}, {high}]", note)
    return _rule(lambda v: low <= v < high, f"in [{low}, {high})", note)


def one_of(choices: Iterable[str]) -> Validator:
    """``value`` is one of ``choices``."""
    choices = tuple(choices)
    return _rule(lambda v: v in choices, " or ".join(f'"{c}"' for c in choices))


def each(*validators: Validator) -> Validator:
    """Apply ``validators`` to every element of a list; the message names the index."""

    def check(instance: Any, attribute: Any, values: list) -> None:
        for index, value in enumerate(values):
            for validator in validators:
                try:
                    validator(instance, attribute, value)
                except ValueError as exc:
                    rule = str(exc).removeprefix(f"'{attribute.name}' ")
                    raise ValueError(f"'{attribute.name}' [{index}] {rule}") from None

    check.rule = "each " + ", ".join(filter(None, (getattr(v, "rule", "") for v in validators)))
    return check


@rule("not empty")
def non_empty(instance: Any, attribute: Any, value: list) -> None:
    if not value:
        raise ValueError(f"'{attribute.name}' must be a non-empty array, got {value!r}")


@rule("odd, >= 1")
def odd(instance: Any, attribute: Any, value: int) -> None:
    """A positive odd number (same-size convolutions centre their kernel)."""
    if value < 1 or value % 2 == 0:
        raise ValueError(f"'{attribute.name}' must be a positive odd number, got {value!r}")


def divides(field: str) -> Validator:
    """``value`` divides the options' ``field`` (attention heads divide the channels)."""

    def check(instance: Any, attribute: Any, value: int) -> None:
        total = getattr(instance, field)
        if value < 1 or total % value:
            raise ValueError(f"'{attribute.name}' must divide '{field}' ({total}), got {value!r}")

    check.rule = f"divides {field}"
    return check


@rule("names of letters, digits, '_' or '-'")
def identifier(instance: Any, attribute: Any, names: Iterable[str]) -> None:
    """Every name (e.g. a stage's, which names a folder) is letters, digits, ``_`` or ``-``."""
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"'{attribute.name}' names must be letters, digits, '_' or '-' (a name is also a "
                             f"folder name), got {name!r}")


@rule("letters, digits, spaces, '_', '-', '.'")
def folder_name(instance: Any, attribute: Any, name: str) -> None:
    """A name that is used as one folder's name (``runs/NAME``): no separators, not ``..``."""
    if not re.fullmatch(r"[A-Za-z0-9_. -]*", name) or name.strip(".") == "" and name:
        raise ValueError(f"'{attribute.name}' must be letters, digits, spaces, '_', '-' or '.' and not only dots "
                         f"(it names the run's folder), got {name!r}")


def _rule(holds: Callable[[Any], bool], rule: str, note: str = "") -> Validator:
    text = f"{rule} ({note})" if note else rule

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"'{attribute.name}' must be a finite number, got {value!r}")
        if not holds(value):
            raise ValueError(f"'{attribute.name}' must be {text}, got {value!r}")

    check.rule = text
    return check


positive = at_least(1)
non_negative = at_least(0)
