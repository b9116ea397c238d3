"""Recipes: TOML files that compose plugins into a multistage system.

Validation runs in two phases and reports every problem at once, each with its path:

1. the core schema (``Recipe`` below, one section per component that reads it) with a strict
   cattrs converter: no unknown keys, no silent coercion (``"false"`` is not a bool, ``"10"`` is
   not an int), every field's range checked by its attrs validator;
2. each component table (``{ plugin = "name", ...options }``) against its plugin's own attrs
   ``Options`` class, then the rules across fields and sections (``build.cross_checks``).
"""

from __future__ import annotations

import difflib
import re
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs
import cattrs.gen
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from spnkit.core.backend import RuntimeConfig
from spnkit.core.errors import SpnkitError
from spnkit.core.validators import (
    above,
    at_least,
    each,
    folder_name,
    identifier,
    in_range,
    non_empty,
    non_negative,
    one_of,
    positive,
    rule,
    up_to,
)
from spnkit.data.config import DataConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class RecipeError(SpnkitError):
    """A recipe is malformed; ``problems`` holds one ``path: message`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    @property
    def lines(self) -> list[str]:
        return self.problems


class Table(dict):
    """A component table: ``{ plugin = "name", ...options }``, checked in phase 2."""


# ----------------------------------------------------------------------------- core schema


@attrs.frozen
class StageConfig:
    """One stage: which part of which plane it models, and the components that model it."""

    decoder: Table = attrs.field(metadata={"doc": "the slice decoder: { plugin = NAME, ...its options }"})
    ordering: Table = attrs.field(factory=lambda: Table(plugin="raster"),
                                metadata={"doc": "how the stage's image is cut into slices and ordered: { plugin = NAME, ... }"})
    encoder: Table | None = attrs.field(default=None,
                                      metadata={"doc": "the context encoder of earlier slices and planes: { plugin = NAME, ... }"})
    conditioner: Table | None = attrs.field(default=None,
                                          metadata={"doc": "side information (a class label or a vector): { plugin = NAME, ... }"})
    plane: int = attrs.field(default=0, validator=non_negative,
                           metadata={"doc": "the quantizer's bit plane this stage models (0: the most significant)"})
    downsample: int = attrs.field(default=1, validator=up_to(4096),
                                metadata={"doc": "model every S-th pixel of each row and column: the first subscale slice as an image"})
    given_slices: int = attrs.field(default=0, validator=non_negative,
                                  metadata={"doc": "slices given by earlier stages, not modelled (1: size upscaling)"})
    conditions_on: list[str] = attrs.field(factory=list,
                                         metadata={"doc": "earlier stages that supply the planes and slices this one conditions on"})
    temperature: float = attrs.field(default=1.0, validator=above(0, "logits are divided by it"),
                                   metadata={"doc": "sampling: logits are divided by it (the paper samples the first stage at 0.99)"})


@attrs.frozen
class TrainConfig:
    """The training loop (``spnkit.engine.train``): how long, on how many images, and the Polyak
    average of the weights that evaluation and sampling use (the paper's 0.9999)."""

    steps: int = attrs.field(default=1000, validator=in_range(0, 2**40),
                             metadata={"doc": "optimizer steps per stage (0 with seconds > 0: no step limit)"})
    seconds: float = attrs.field(default=0.0, validator=at_least(0, "0: no time budget"),
                                 metadata={"doc": "training time per stage: stop at the first checkpoint past it "
                                                  "(with steps: whichever comes first)"})
    batch_size: int = attrs.field(default=32, validator=up_to(65536),
                                metadata={"doc": "images per step over all processes"})
    pixels_per_batch: int = attrs.field(default=0, validator=in_range(0, 2**31, note="0: use batch_size"),
                                      metadata={"doc": "> 0: the batch is this many pixels' worth of images, as the paper keeps pixels per batch constant"})
    accumulate: int = attrs.field(default=1, validator=up_to(65536),
                                metadata={"doc": "micro-batches per step (gradients summed before the update)"})
    ema: float = attrs.field(default=0.9999, validator=in_range(0, 1, note="0: no averaging; 1 would never move"),
                           metadata={"doc": "the Polyak average's decay, reached after a warm-up: min(ema, (1 + n) / (10 + n)) at update n"})
    checkpoint_every: int = attrs.field(default=500, validator=positive, metadata={"doc": "steps between checkpoints"})

    def global_batch(self, pixels_per_image: int) -> int:
        """Images per step over all processes: ``batch_size``, or ``pixels_per_batch`` worth."""
        if self.pixels_per_batch:
            return max(1, self.pixels_per_batch // pixels_per_image)
        return self.batch_size


@attrs.frozen
class OptimizerConfig:
    """RMSProp and gradient clipping (paper defaults: momentum 0.9, decay 0.95, eps 1e-8)."""

    momentum: float = attrs.field(default=0.9, validator=in_range(0, 1), metadata={"doc": "RMSProp momentum"})
    decay: float = attrs.field(default=0.95, validator=in_range(0, 1),
                             metadata={"doc": "RMSProp decay of the squared-gradient average (torch's alpha)"})
    eps: float = attrs.field(default=1e-8, validator=above(0),
                           metadata={"doc": "RMSProp epsilon, added to the root of the squared-gradient average"})
    grad_clip: float = attrs.field(default=1.0, validator=above(0),
                                 metadata={"doc": "the global gradient norm's limit"})


@rule("one fewer than the learning rates, positive and increasing")
def _milestones_match_rates(schedule: ScheduleConfig, attribute: attrs.Attribute, milestones: list[int]) -> None:
    rates = len(schedule.learning_rate)
    if rates and len(milestones) != rates - 1:
        raise ValueError(f"{rates} learning rate(s) need {rates - 1} milestone(s) (the steps where the next "
                         f"one starts), got {len(milestones)}")
    if any(b <= a for a, b in zip([0, *milestones], milestones)):
        raise ValueError(f"must be positive and increasing, got {milestones!r}")


@attrs.frozen
class ScheduleConfig:
    """A piecewise-constant learning rate: ``learning_rate[k]`` from ``milestones[k-1]`` on."""

    learning_rate: list[float] = attrs.field(factory=lambda: [5e-5], validator=[non_empty, each(above(0))],
                                           metadata={"doc": "learning rates, the first from step 0, the next from each milestone"})
    milestones: list[int] = attrs.field(factory=list, validator=_milestones_match_rates,
                                      metadata={"doc": "the steps where the next learning rate starts"})

    def rate(self, step: int) -> float:
        """The learning rate of step ``step`` (counted from 0)."""
        passed = sum(step >= milestone for milestone in self.milestones)
        return self.learning_rate[min(passed, len(self.learning_rate) - 1)]


@attrs.frozen
class LoggingConfig:
    """What training reports: a metrics record every ``every`` steps, to each of ``sinks``."""

    every: int = attrs.field(default=10, validator=positive, metadata={"doc": "steps between metrics records"})
    sinks: list[str] = attrs.field(
        factory=lambda: ["jsonl", "tensorboard"], validator=each(one_of(("jsonl", "tensorboard", "wandb"))),
        metadata={"doc": "where metrics go: jsonl (always, OUT/metrics.jsonl), tensorboard (OUT/tensorboard), "
                         "wandb (Weights & Biases); one asked for and not installed is an error, the default's "
                         "tensorboard a warning"})


@attrs.frozen
class EvalConfig:
    """Exact evaluation (``spnkit eval``, the end of ``spnkit run``): every slice of every test image."""

    batch_size: int = attrs.field(default=64, validator=up_to(65536), metadata={"doc": "test images scored at once"})
    max_images: int = attrs.field(default=0, validator=at_least(0, "0: the whole test split"),
                                metadata={"doc": "score only the first N test images"})


@attrs.frozen
class SampleConfig:
    """Sampling at the end of ``spnkit run`` (``spnkit sample`` takes its own ``--count``)."""

    count: int = attrs.field(default=16, validator=up_to(4096),
                           metadata={"doc": "images sampled by spnkit run (per class, rounded down, for class-conditional recipes)"})


@attrs.frozen
class Recipe:
    """A whole recipe: its top-level keys and one section per component that reads it."""

    data: DataConfig = attrs.field(metadata={"doc": "where images come from and what they are"})
    quantizer: Table = attrs.field(metadata={"doc": "how each subpixel's bits split into planes: { plugin = NAME, ... }"})
    stages: dict[str, StageConfig] = attrs.field(validator=identifier,
                                               metadata={"doc": "the stages, run in the order of their tables"})
    name: str = attrs.field(default="", validator=folder_name,
                          metadata={"doc": "the run's name; the default --out is runs/NAME"})
    seed: int = attrs.field(default=0, validator=in_range(0, 2**32),
                          metadata={"doc": "seeds initialisation, data order and sampling"})
    train: TrainConfig = attrs.field(factory=TrainConfig, metadata={"doc": "the training loop"})
    optimizer: OptimizerConfig = attrs.field(factory=OptimizerConfig, metadata={"doc": "RMSProp and gradient clipping"})
    schedule: ScheduleConfig = attrs.field(factory=ScheduleConfig, metadata={"doc": "the learning rate"})
    runtime: RuntimeConfig = attrs.field(factory=RuntimeConfig,
                                       metadata={"doc": "the backend that runs training, and how"})
    logging: LoggingConfig = attrs.field(factory=LoggingConfig, metadata={"doc": "what training reports"})
    eval: EvalConfig = attrs.field(factory=EvalConfig, metadata={"doc": "exact evaluation"})
    sample: SampleConfig = attrs.field(factory=SampleConfig, metadata={"doc": "sampling at the end of spnkit run"})


# fields that moved out of [train] into their own sections, for a helpful "unknown key" message
MOVED = {
    "train.learning_rate": "schedule.learning_rate", "train.lr_milestones": "schedule.milestones",
    "train.momentum": "optimizer.momentum", "train.decay": "optimizer.decay", "train.eps": "optimizer.eps",
    "train.grad_clip": "optimizer.grad_clip", "train.log_every": "logging.every",
    "train.backend": "runtime.backend", "train.precision": "runtime.precision",
    "train.compile": "runtime.compile", "train.parallel": "runtime.parallel",
}


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
    """A cattrs converter that rejects unknown keys, never coerces types, and runs every
    field's attrs validator, collecting all failures (attrs alone stops at the first)."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in (int, float, str, bool):
        converter.register_structure_hook(kind, _scalar_hook(kind))
    converter.register_structure_hook(Table, _table_hook)

    def collection_hook(value: Any, type_: Any) -> list | dict:
        is_list = typing.get_origin(type_) is list
        if not isinstance(value, list if is_list else dict):
            raise FieldError(f"expected {'an array' if is_list else 'a table'}, got {describe(value)}")
        item = typing.get_args(type_)[-1]
        pairs = enumerate(value) if is_list else value.items()
        out, errors = {}, []
        for key, element in pairs:
            try:
                out[key] = converter.structure(element, item)
            except Exception as exc:
                exc.__notes__ = [IterableValidationNote(f"@ {key!r}", key, item)]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {type_}", errors, type_)
        return list(out.values()) if is_list else out

    def validated_class_hook(cls: type):
        unchecked = cattrs.gen.make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True)

        def structure(value: Any, _type: Any) -> Any:
            if not isinstance(value, dict):
                raise FieldError(f"expected a table, got {describe(value)}")
            # unknown keys are reported beside, not instead of, what is wrong with the known ones
            extra = set(value) - {field.name for field in attrs.fields(cls)}
            errors: list[Exception] = []
            if extra:
                errors.append(ForbiddenExtraKeysError(f"Extra fields in constructor for {cls.__name__}", cls, extra))
                value = {key: item for key, item in value.items() if key not in extra}
            try:
                with attrs.validators.disabled():
                    instance = unchecked(value, cls)
            except ClassValidationError as exc:
                raise ClassValidationError(f"While structuring {cls.__name__}", [*errors, *exc.exceptions], cls) from None
            except Exception as exc:
                if errors:
                    raise ClassValidationError(f"While structuring {cls.__name__}", [*errors, exc], cls) from None
                raise
            for field in attrs.fields(cls):
                if field.validator is None:
                    continue
                try:
                    field.validator(instance, field, getattr(instance, field.name))
                except ValueError as exc:  # "'name' must be ...": the path will name the field
                    message = str(exc).removeprefix(f"'{field.name}' ")
                    error = ValueError(message)
                    error.__notes__ = [AttributeValidationNote(f"@ {field.name}", field.name, field.type)]
                    errors.append(error)
            if errors:
                raise ClassValidationError(f"While structuring {cls.__name__}", errors, cls)
            return instance

        return structure

    converter.register_structure_hook_func(lambda t: typing.get_origin(t) in (list, dict), collection_hook)
    converter.register_structure_hook_factory(attrs.has, validated_class_hook)
    return converter


CONVERTER = make_converter()


def _message(exc: BaseException, _type: Any) -> str:
    """One problem's text for ``cattrs.transform_error``. Unknown keys give one line per key,
    each starting with ``.KEY`` + tab, which ``problems`` appends to the path."""
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [field.name for field in attrs.fields(exc.cl)]
        lines = []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(known)}"
            lines.append(f".{key}\tunknown key; {hint}")
        return "\n".join(lines)
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, (FieldError, ValueError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def problems(exc: BaseException, path: str = "") -> list[str]:
    """cattrs' nested errors -> ``["a.b[2].c: message", ...]``, one line per problem."""
    lines = []
    for item in cattrs.transform_error(exc, path="$", format_exception=_message):
        messages, _, where = item.rpartition(" @ ")
        where = re.sub(r"\['((?:[^'\\]|\\.)*)'\]", r".\1", where[1:])  # $.stages['low'] -> .stages.low
        for message in messages.splitlines():
            key, tab, text = message.partition("\t")
            index = re.match(r"\[(\d+)\] ", message)  # from validators.each
            if index:
                key, tab, text = f"[{index[1]}]", True, message[index.end():]
            full = f"{path}{where}{key}" if tab else f"{path}{where}"
            moved = MOVED.get(full.lstrip("."))
            if moved:
                text = f"moved to {moved}"
            lines.append(f"{full.lstrip('.')}: {text if tab else message}")
    return lines


def structure(value: Any, cls: type, path: str) -> tuple[Any, list[str]]:
    """Strictly structure ``value`` into ``cls``; returns ``(result or None, problems)``."""
    try:
        return CONVERTER.structure(value, cls), []
    except Exception as exc:
        return None, problems(exc, path)


# ----------------------------------------------------------------------------- reading


MAX_EXTENDS = 32  # recipes in one chain of ``extends``


def read(path: str | Path, bases: Sequence[Path] = ()) -> dict:
    """A recipe file, with what it ``extends`` merged under it (see ``merge``). ``extends =
    "base.toml"`` names another recipe relative to this one's folder or, when there is no such
    file there and it is a bare file name (``.toml`` may be left out), one in the first of the
    folders ``bases`` that has it (the bundled recipes, so a copy of one that extends another
    still finds its base, and ``extends = "quickstart"`` names the bundled one); that one
    may extend another in turn. A cycle, a missing base or a chain longer than ``MAX_EXTENDS``
    is a ``RecipeError``."""
    chain: list[Path] = []
    layers = []
    path = Path(path)
    while True:
        raw = read_file(path)
        chain.append(path)
        parent = raw.pop("extends", None)
        layers.append(raw)
        if parent is None:
            break
        if not isinstance(parent, str) or not parent:
            raise RecipeError([f"{path}: extends: expected the path of another recipe, relative to this one, "
                               f"got {describe(parent)}"])
        base = path.parent / parent
        if not base.is_file() and Path(parent).name == parent:  # a bare name: "quickstart" as "quickstart.toml"
            names = [parent] if parent.endswith(".toml") else [parent, f"{parent}.toml"]
            base = next((folder / name for folder in [path.parent, *bases] for name in names
                         if (folder / name).is_file()), base)
        if any(_same_file(base, seen) for seen in chain):
            names = " -> ".join(str(p) for p in [*chain, base])
            raise RecipeError([f"{path}: extends {parent!r}: a cycle ({names})"])
        if not base.is_file():
            raise RecipeError([f"{path}: extends {parent!r}: no recipe file {base}"])
        if len(chain) >= MAX_EXTENDS:
            raise RecipeError([f"{path}: extends {parent!r}: more than {MAX_EXTENDS} recipes in one chain"])
        path = base
    merged = layers.pop()
    while layers:
        merged = merge(merged, layers.pop())
    return merged


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def merge(base: dict, child: dict) -> dict:
    """``child`` over ``base``: tables merged key by key, all the way down; any other value, and
    a table that names a ``plugin`` (a component chosen anew: its options belong to that
    plugin), replaces the base's whole, as a ``KEY=VALUE`` override does."""
    merged = dict(base)
    for key, value in child.items():
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, dict) and "plugin" not in value:
            merged[key] = merge(below, value)
        else:
            merged[key] = value
    return merged


def read_file(path: str | Path) -> dict:
    """Parse one TOML recipe file as written; a missing or unreadable file, one over 1 MiB (read no further:
    ``/dev/zero`` ends), one that is not UTF-8 text, or invalid TOML is a ``RecipeError``."""
    path, limit = Path(path), 1 << 20
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise RecipeError([f"{path}: cannot read recipe ({exc.strerror or exc})"]) from None
    if len(data) > limit:
        raise RecipeError([f"{path}: recipe is larger than 1 MiB; not a recipe file?"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError([f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}; "
                           "not a recipe file?"]) from None
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
