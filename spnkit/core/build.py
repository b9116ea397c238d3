"""From a parsed recipe to plugins' options (phase 2 of validation), cross-field checks, and
the stage and pipeline objects themselves."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import tomli_w
import torch

from spnkit.core import recipe as recipes
from spnkit.core.interfaces import EncoderSpec, InputSpec, Ordering, Quantizer, SideInfo, SliceSpec
from spnkit.core.plugins import Entry, Registry, UnknownPluginError, default_registry
from spnkit.core.recipe import Recipe, RecipeError, StageConfig
from spnkit.core.system import AutoregressiveStage, Pipeline

STAGE_COMPONENTS = {"ordering": "ordering", "encoder": "encoder", "decoder": "decoder", "conditioner": "conditioner"}


@attrs.frozen
class Component:
    """A plugin chosen by a recipe, with its validated options."""

    entry: Entry
    options: Any

    @property
    def cls(self) -> type:
        return self.entry.cls

    def create(self, *args: Any) -> Any:
        return self.entry.cls(self.options, *args)

    def table(self) -> dict:
        return {"plugin": self.entry.name, **recipes.options_table(self.options)}


@attrs.frozen
class StagePlan:
    """One stage of a validated recipe: its settings and the components that make it."""

    name: str
    config: StageConfig
    ordering: Component
    decoder: Component
    encoder: Component | None = None
    conditioner: Component | None = None

    @property
    def side(self) -> SideInfo | None:
        """What the stage's conditioner takes; None for an unconditional stage."""
        return None if self.conditioner is None else self.conditioner.cls.side_info(self.conditioner.options)


@attrs.frozen
class Resolved:
    """A fully validated recipe: the core schema plus each component's options."""

    recipe: Recipe
    quantizer_choice: Component
    stages: dict[str, StagePlan]

    def quantizer(self) -> Quantizer:
        return self.quantizer_choice.create(self.recipe.data.bits)

    @property
    def side(self) -> SideInfo | None:
        """The side information the data gives every conditional stage (the cross checks make
        them agree); None when no stage takes labels or vectors."""
        return next((plan.side for plan in self.stages.values() if plan.side is not None and plan.side.from_data),
                    None)

    @property
    def encoded(self) -> list[str]:
        """The stages conditioned on the code of their own input image (an auto-encoder's): their
        figures are ``-log p(x | code(x))``, not likelihoods of ``x``."""
        return [name for name, plan in self.stages.items() if plan.side is not None and not plan.side.from_data]

    @property
    def classes(self) -> int | None:
        """How many classes the stages take labels of; None unless they take labels."""
        side = self.side
        return side.size if side is not None and side.kind == "labels" else None

    @property
    def batch_size(self) -> int:
        """Images per training step over all processes."""
        data = self.recipe.data
        return self.recipe.train.global_batch(data.height * data.width)

    def to_dict(self) -> dict:
        raw = recipes.CONVERTER.unstructure(self.recipe)
        raw["quantizer"] = self.quantizer_choice.table()
        for name, stage in raw["stages"].items():
            for key in STAGE_COMPONENTS:
                chosen = getattr(self.stages[name], key)
                if chosen is None:
                    stage.pop(key, None)
                else:
                    stage[key] = chosen.table()
        return raw

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


# ----------------------------------------------------------------------------- phase 2


def _component(raw: Any, kind: str, path: str, registry: Registry) -> tuple[Component | None, list[str]]:
    if not isinstance(raw, dict) or not isinstance(raw.get("plugin"), str):
        return None, []  # phase 1 reports it
    try:
        entry = registry.get(kind, raw["plugin"])
    except UnknownPluginError as exc:
        return None, [f"{path}.plugin: {exc}"]
    options, problems = recipes.structure({k: v for k, v in raw.items() if k != "plugin"}, entry.cls.Options, path)
    return (Component(entry, options) if options is not None else None), problems


def _plans(recipe: Recipe, raw: dict, registry: Registry) -> tuple[Component | None, dict[str, StagePlan], list[str]]:
    """Phase 2: each component table against its plugin's options; the quantizer and one plan
    per stage (None / left out where a table has problems), and the problems."""
    quantizer, problems = _component(raw.get("quantizer"), "quantizer", "quantizer", registry)
    plans = {}
    stages = raw.get("stages")
    for name, stage in (stages.items() if isinstance(stages, dict) else ()):
        if not isinstance(stage, dict):
            continue
        chosen = {}
        for key, kind in STAGE_COMPONENTS.items():
            table = stage.get(key, {"plugin": "raster"} if key == "ordering" else None)
            chosen[key], issues = _component(table, kind, f"stages.{name}.{key}", registry)
            problems += issues
        if recipe is not None and chosen["ordering"] is not None and chosen["decoder"] is not None:
            plans[name] = StagePlan(name, recipe.stages[name], **chosen)
    return quantizer, plans, problems


def validate(raw: dict, registry: Registry | None = None) -> Resolved:
    """Both validation phases and the cross-field checks; raises ``RecipeError`` listing every
    problem found."""
    registry = registry or default_registry()
    recipe, problems = recipes.structure(raw, Recipe, "")
    quantizer, plans, component_problems = _plans(recipe, raw, registry)
    problems += component_problems
    if recipe is not None and not component_problems:
        problems += cross_checks(Resolved(recipe, quantizer, plans))
    if problems:
        raise RecipeError(list(dict.fromkeys(problems)))
    return Resolved(recipe, quantizer, plans)


def load(path: str, overrides: list[str] = (), registry: Registry | None = None,
         bases: Sequence[Path] = ()) -> Resolved:
    """Read, override and validate a recipe file (``bases``: where else a recipe's ``extends``
    is looked for, see ``recipe.read``)."""
    return validate(recipes.apply_overrides(recipes.read(path, bases), list(overrides)), registry)


# ----------------------------------------------------------------------------- cross checks


@attrs.frozen
class Placement:
    """Where a stage sits: plane, resolution and which of its pixels it models."""

    ordering: Ordering
    height: int
    width: int
    modelled: torch.Tensor  # [H, W] bool at full resolution
    given: torch.Tensor  # [H, W] bool: own-plane pixels it needs from earlier stages


def _placement(resolved: Resolved, plan: StagePlan) -> tuple[Placement | None, list[str]]:
    data, path, stage = resolved.recipe.data, f"stages.{plan.name}", plan.config
    down = stage.downsample
    if data.height % down or data.width % down:
        return None, [f"{path}.downsample: must be a positive divisor of the image size {data.height}x{data.width}, got {down}"]
    height, width = data.height // down, data.width // down
    ordering = plan.ordering.create()
    problems = [f"{path}.ordering: {p}" for p in ordering.check(height, width)]
    if problems:
        return None, problems
    slices = ordering.num_slices(height, width)
    if not 0 <= stage.given_slices < slices:
        return None, [f"{path}.given_slices: must be in [0, {slices - 1}] for {slices} slices, got {stage.given_slices}"]
    h, w = ordering.slice_shape(height, width)
    first_modelled = ranks_from(ordering, height, width) >= stage.given_slices * h * w
    modelled = torch.zeros(data.height, data.width, dtype=torch.bool)
    given = torch.zeros_like(modelled)
    modelled[::down, ::down] = first_modelled
    given[::down, ::down] = ~first_modelled
    return Placement(ordering, height, width, modelled, given), []


def ranks_from(ordering: Ordering, height: int, width: int) -> torch.Tensor:
    return ordering.ranks(1, height, width)[0]


def _close(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def cross_checks(resolved: Resolved) -> list[str]:
    """Every rule that spans fields or sections (one field's range is its validator's job):
    batch arithmetic, the quantizer against the data, each stage's placement and components,
    the partition of the image's variables between stages, what each stage conditions on, and
    the side information the stages share."""
    recipe = resolved.recipe
    problems = _batch_problems(recipe)
    quantizer = resolved.quantizer()
    problems += [f"quantizer: {p}" for p in quantizer.check()]
    if not recipe.stages:
        problems.append("stages: at least one stage is required, e.g. [stages.main]")
    if problems:
        return problems
    planes = len(quantizer.plane_bits)
    names = list(recipe.stages)
    placements: dict[str, Placement] = {}
    closure: dict[str, set[str]] = {}
    for position, (name, stage) in enumerate(recipe.stages.items()):
        path = f"stages.{name}"
        if not 0 <= stage.plane < planes:
            problems.append(f"{path}.plane: the quantizer makes {planes} plane(s) (0..{planes - 1}), got {stage.plane}")
            continue
        plan = resolved.stages[name]
        placement, issues = _placement(resolved, plan)
        problems += issues
        closure[name] = set()
        for index, other in enumerate(stage.conditions_on):
            if other not in recipe.stages:
                problems.append(f"{path}.conditions_on[{index}]: unknown stage {other!r}; "
                                f"{_close(other, names)}earlier stages: {', '.join(names[:position]) or 'none'}")
            elif names.index(other) >= position:
                problems.append(f"{path}.conditions_on[{index}]: stage {other!r} does not come before {name!r}; "
                                "stages run in the order of their tables")
            else:
                closure[name] |= {other} | closure.get(other, set())
                continue
            closure[name].add(other)  # unusable: keeps the conditioning check from adding to this problem
        if placement is None:
            continue
        placements[name] = placement
        decoder = plan.decoder.entry
        if placement.ordering.pixel_order not in decoder.cls.pixel_orders:
            problems.append(f"{path}.decoder: {decoder.name!r} suits pixel orders {list(decoder.cls.pixel_orders)}, "
                            f"but ordering {plan.ordering.entry.name!r} "
                            f"lays slices out as {placement.ordering.pixel_order!r}")
        slices = placement.ordering.num_slices(placement.height, placement.width)
        needs_context = slices - stage.given_slices > 1 or stage.given_slices > 0 or stage.plane > 0
        if needs_context and plan.encoder is None:
            problems.append(f"{path}.encoder: required, since the stage conditions on "
                            f"{'earlier planes' if stage.plane else 'earlier slices'}; "
                            'add e.g. encoder = { plugin = "slice_embedder" }')
    problems += _partition_problems(recipe, placements, planes)
    problems += _conditioning_problems(recipe, placements, closure)
    problems += _side_problems(resolved)
    return problems or _build_problems(resolved)


MAX_PARAMETERS = 2**31  # per stage: 8 GiB of float32 weights, far beyond the paper's 250M systems


def _build_problems(resolved: Resolved) -> list[str]:
    """Each stage is built on the meta device (no memory): a combination of options that its
    components refuse (e.g. fewer features than colour channels), or a stage too large to
    allocate, is reported here rather than when training starts."""
    problems = []
    for name in resolved.stages:
        try:
            with torch.device("meta"):
                count = sum(p.numel() for p in build_stage(resolved, name).parameters())
        except ValueError as exc:
            problems.append(f"stages.{name}: {exc}")
            continue
        if count > MAX_PARAMETERS:
            problems.append(f"stages.{name}: {count:,} parameters, more than {MAX_PARAMETERS:,}; narrow its layers")
    return problems


def _batch_problems(recipe: Recipe) -> list[str]:
    """The global batch must be whole images, split evenly into micro-batches."""
    train, data = recipe.train, recipe.data
    pixels, problems = data.height * data.width, []
    if train.pixels_per_batch % pixels:
        problems.append(f"train.pixels_per_batch: {train.pixels_per_batch} is not a multiple of the "
                        f"{data.height}x{data.width} = {pixels} pixels of an image")
    batch = train.global_batch(pixels)
    if batch % train.accumulate:
        problems.append(f"train.accumulate: {train.accumulate} micro-batches do not divide the batch of {batch}")
    return problems


def _side_problems(resolved: Resolved) -> list[str]:
    """Every stage is given the same side information, so conditioners must agree on it; and the
    engine hands the data's side information to every conditional stage, so stages that encode
    their own input do not share a recipe with stages given labels or vectors (yet)."""
    problems, first = [], None
    data_side = resolved.side
    if data_side is not None:
        given = next(name for name, plan in resolved.stages.items() if plan.side == data_side)
        problems += [f"stages.{name}.conditioner: a stage given the code of its own input cannot share a recipe "
                     f"with stages given {data_side} (stage {given!r}) yet" for name in resolved.encoded]
    for plan in resolved.stages.values():
        side = plan.side
        if side is None or not side.from_data:
            continue  # a stage's own input image is its own
        if first is None:
            first = plan.name, side
        elif side != first[1]:
            path = f"stages.{plan.name}.conditioner"
            if side.kind == first[1].kind:
                path += f".{plan.conditioner.cls.size_option}"
            problems.append(f"{path}: takes {side}, but stage {first[0]!r} takes {first[1]}; "
                            "every stage is given the same side information")
    return problems


def _partition_problems(recipe: Recipe, placements: dict[str, Placement], planes: int) -> list[str]:
    if len(placements) != len(recipe.stages):
        return []
    problems = []
    for plane in range(planes):
        owners = [name for name, s in recipe.stages.items() if s.plane == plane]
        count = sum((placements[n].modelled.int() for n in owners), torch.zeros(recipe.data.height, recipe.data.width, dtype=torch.int))
        if not owners:
            problems.append(f"stages: no stage models plane {plane}; add a stage with plane = {plane}")
        elif (count > 1).any():
            problems.append(f"stages: stages {', '.join(owners)} model some pixels of plane {plane} twice")
        elif (count == 0).any():
            problems.append(f"stages: some pixels of plane {plane} are modelled by no stage ({', '.join(owners)} leave a gap)")
    return problems


def _conditioning_problems(recipe: Recipe, placements: dict[str, Placement], closure: dict[str, set[str]]) -> list[str]:
    problems = []
    for name, stage in recipe.stages.items():
        named = closure.get(name)
        if name not in placements or named is None or not named <= placements.keys():
            continue  # a problem already reported: a bad placement, or an unknown or later stage named
        down = stage.downsample
        provided = {}
        for other in closure[name]:
            if other in placements:
                plane = recipe.stages[other].plane
                provided[plane] = provided.get(plane, 0) | placements[other].modelled
        for plane in range(stage.plane + 1):
            need = torch.zeros(recipe.data.height, recipe.data.width, dtype=torch.bool)
            if plane < stage.plane:
                need[::down, ::down] = True
            else:
                need = placements[name].given
            have = provided.get(plane, torch.zeros_like(need))
            if (need & ~have).any():
                what = "its given slices" if plane == stage.plane else f"plane {plane}"
                problems.append(f"stages.{name}.conditions_on: the stage needs {what}, which the stages it names "
                                f"({', '.join(stage.conditions_on) or 'none'}) do not model; name the stage that does")
    return problems


# ----------------------------------------------------------------------------- objects


def build_stage(resolved: Resolved, name: str) -> AutoregressiveStage:
    """The stage ``name`` of a validated recipe, with freshly initialised parameters."""
    plan = resolved.stages[name]
    stage = plan.config
    quantizer = resolved.quantizer()
    data = resolved.recipe.data
    height, width = data.height // stage.downsample, data.width // stage.downsample
    ordering = plan.ordering.create()
    h, w = ordering.slice_shape(height, width)
    levels = 2 ** quantizer.plane_bits[stage.plane]
    cond_levels = 2 ** sum(quantizer.plane_bits[: stage.plane]) if stage.plane else 0
    conditioner = None
    if plan.conditioner is not None:
        conditioner = plan.conditioner.create(InputSpec(data.channels, height, width, levels))
    side_channels = conditioner.out_channels if conditioner is not None else 0
    encoder = None
    if plan.encoder is not None:
        encoder = plan.encoder.create(EncoderSpec(data.channels, h, w, levels, ordering.grid(height, width),
                                                    cond_levels, side_channels))
    context_channels = (encoder.out_channels if encoder is not None else 0) + side_channels
    decoder = plan.decoder.create(SliceSpec(data.channels, h, w, levels, context_channels))
    return AutoregressiveStage(ordering, decoder, encoder, (data.channels, height, width), levels,
                               cond_levels, stage.given_slices, conditioner)


def build_pipeline(resolved: Resolved) -> Pipeline:
    """Every stage of a validated recipe, chained."""
    stages = {name: build_stage(resolved, name) for name in resolved.recipe.stages}
    placements = {name: (s.plane, s.downsample) for name, s in resolved.recipe.stages.items()}
    return Pipeline(resolved.quantizer(), stages, placements)
