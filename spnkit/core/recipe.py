"""Recipes: TOML files that compose plugins into a multistage system.

Validation runs in two phases and reports every problem at once, each with its path:

1. the core schema (``Recipe`` below) with a strict cattrs converter: no unknown keys, no
   silent coercion (``"false"`` is not a bool, ``"10"`` is not an int);
2. each component table (``{ plugin = "name", ...options }``) against its plugin's own attrs
   ``Options`` class, then the cross-field checks (sizes divisible by the subscale factor,
   bit splits, the partition of variables between stages, decoder/ordering compatibility).
"""

from __future__ import annotations

import difflib
import sys
import typing
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class RecipeError(Exception):
    """A recipe is malformed; ``problems`` holds one ``path: message`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Table(dict):
    """A component table: ``{ plugin = "name", ...options }``, checked in phase 2."""


# ----------------------------------------------------------------------------- core schema


@attrs.frozen
class DataConfig:
    """Where images come from and what they are."""

    source: str = "fashion_mnist"
    height: int = 28
    width: int = 28
    channels: int = 1
    bits: int = 8
    train: str = ""  # shards: a path, brace pattern or glob, e.g. "data/x/train-{000000..000026}.tar"
    test: str = ""
    prepare: str = ""  # the command that makes the shards, shown when they are missing
    workers: int = 0  # loader worker processes per rank (0: read in the training process)
    max_bad_samples: int = 10  # distinct damaged samples tolerated before a run stops
    streams: int = 0  # sample streams per global batch (0: ranks x workers); fix it to compare runs


@attrs.frozen
class StageConfig:
    """One stage: which part of which plane it models, and the components that model it."""

    decoder: Table
    ordering: Table = attrs.field(factory=lambda: Table(plugin="raster"))
    encoder: Table | None = None
    conditioner: Table | None = None
    plane: int = 0
    downsample: int = 1
    given_slices: int = 0
    conditions_on: list[str] = attrs.field(factory=list)
    temperature: float = 1.0


@attrs.frozen
class TrainConfig:
    """Optimisation (paper defaults: RMSProp momentum 0.9, decay 0.95, eps 1e-8; Polyak 0.9999)."""

    steps: int = 1000
    batch_size: int = 32
    learning_rate: list[float] = attrs.field(factory=lambda: [5e-5])
    lr_milestones: list[int] = attrs.field(factory=list)
    momentum: float = 0.9
    decay: float = 0.95
    eps: float = 1e-8
    ema: float = 0.9999
    grad_clip: float = 1.0
    log_every: int = 10
    checkpoint_every: int = 500
    pixels_per_batch: int = 0  # > 0: batch_size = pixels_per_batch / (height * width), as the paper scales it
    accumulate: int = 1  # micro-batches per step (gradient accumulation), each batch_size / accumulate / ranks
    backend: str = "auto"  # a backend plugin: cpu, cuda, xla, ... ("auto": xla, then cuda, then cpu)
    precision: str = "fp32"  # or "bf16" (autocast)
    compile: bool = False  # torch.compile each stage
    parallel: str = "ddp"  # with several processes: "ddp" (replicas) or "fsdp" (sharded parameters)


@attrs.frozen
class EvalConfig:
    batch_size: int = 64
    max_images: int = 0


@attrs.frozen
class SampleConfig:
    count: int = 16


@attrs.frozen
class Recipe:
    data: DataConfig
    quantizer: Table
    stages: dict[str, StageConfig]
    name: str = ""
    seed: int = 0
    train: TrainConfig = attrs.field(factory=TrainConfig)
    eval: EvalConfig = attrs.field(factory=EvalConfig)
    sample: SampleConfig = attrs.field(factory=SampleConfig)


# ----------------------------------------------------------------------------- strict converter


def describe(value: Any) -> str:
    """``str 'ten'``, ``bool True``, ``table {...}``: what a user wrote, briefly."""
    kind = {dict: "table", list: "array"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


class FieldError(TypeError):
    """A value of the wrong type; the message is shown to users as is."""


def _scalar_hook(expected: type):
    def structure(value: Any, _type: Any) -> Any:
        if expected is float and type(value) is int:
            return float(value)
        if type(value) is not expected:
            raise FieldError(f"expected {expected.__name__}, got {describe(value)}")
        return value

    return structure


def _table_hook(value: Any, _type: Any) -> Table:
    if not isinstance(value, dict):
        raise FieldError(f'expected a table like {{ plugin = "name", ... }}, got {describe(value)}')
    if "plugin" not in value:
        raise FieldError('missing key "plugin" (the name of the component to use)')
    if not isinstance(value["plugin"], str):
        raise FieldError(f"plugin: expected str, got {describe(value['plugin'])}")
    return Table(value)


def make_converter() -> cattrs.Converter:
    """A cattrs converter that rejects unknown keys and never coerces types."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in (int, float, str, bool):
        converter.register_structure_hook(kind, _scalar_hook(kind))
    converter.register_structure_hook(Table, _table_hook)

    def is_list(type_: Any) -> bool:
        return typing.get_origin(type_) is list

    def is_dict(type_: Any) -> bool:
        return typing.get_origin(type_) is dict

    def list_hook(value: Any, type_: Any) -> list:
        if not isinstance(value, list):
            raise FieldError(f"expected an array, got {describe(value)}")
        (item,) = typing.get_args(type_)
        out, errors = [], []
        for index, element in enumerate(value):
            try:
                out.append(converter.structure(element, item))
            except Exception as exc:
                exc.__notes__ = [IterableValidationNote(f"index {index}", index, item)]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {type_}", errors, type_)
        return out

    def dict_hook(value: Any, type_: Any) -> dict:
        if not isinstance(value, dict):
            raise FieldError(f"expected a table, got {describe(value)}")
        _, item = typing.get_args(type_)
        out, errors = {}, []
        for key, element in value.items():
            try:
                out[key] = converter.structure(element, item)
            except Exception as exc:
                exc.__notes__ = [IterableValidationNote(f"key {key!r}", key, item)]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {type_}", errors, type_)
        return out

    converter.register_structure_hook_func(is_list, list_hook)
    converter.register_structure_hook_func(is_dict, dict_hook)
    return converter


CONVERTER = make_converter()


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def flatten_errors(exc: BaseException, path: str = "") -> list[str]:
    """cattrs' nested exception groups -> ``["a.b[2].c: message", ...]``."""
    for note in getattr(exc, "__notes__", []):
        if isinstance(note, AttributeValidationNote):
            path = _join(path, note.name)
        elif isinstance(note, IterableValidationNote):
            path = _join(path, note.index)
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [field.name for field in attrs.fields(exc.cl)]
        lines = []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(known)}"
            lines.append(f"{_join(path, key)}: unknown key; {hint}")
        return lines
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        return [line for sub in exc.exceptions for line in flatten_errors(sub, path)]
    if isinstance(exc, KeyError):
        return [f"{path}: required key missing"]
    message = str(exc) if isinstance(exc, (FieldError, ValueError)) else f"{type(exc).__name__}: {exc}"
    return [f"{path}: {message}"]


def structure(value: Any, cls: type, path: str) -> tuple[Any, list[str]]:
    """Strictly structure ``value`` into ``cls``; returns ``(result or None, problems)``."""
    try:
        return CONVERTER.structure(value, cls), []
    except Exception as exc:
        return None, flatten_errors(exc, path)


# ----------------------------------------------------------------------------- reading


def read(path: str | Path) -> dict:
    """Parse a TOML recipe; a missing file or invalid TOML is a ``RecipeError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError([f"{path}: cannot read recipe ({exc.strerror})"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"{path}: invalid TOML: {exc}"]) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=VALUE"`` -> ``(["a", "b", "c"], value)``, VALUE parsed as TOML (a bare word
    that is not TOML is taken as a string)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError([f"override {text!r}: expected KEY=VALUE, e.g. train.steps=100"])
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set each ``KEY=VALUE`` in the raw recipe; a table value replaces the whole table."""
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise RecipeError([f"override {text!r}: {where} is {describe(child)}, not a table"])
            node = child
        node[keys[-1]] = value
    return raw


def options_table(options: Any) -> dict:
    """An options instance as a TOML-ready table (None fields left out)."""
    return {k: v for k, v in CONVERTER.unstructure(options).items() if v is not None}
