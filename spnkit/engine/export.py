"""A trained system in one line (``spnkit.load``) and as files to share (``spnkit export``).

An export folder::

    DIR/recipe.toml                      the resolved recipe (every default filled in)
    DIR/plugins.json                     the plugins that built it, as in a run folder
    DIR/stages/NAME/model.safetensors    each stage's Polyak-averaged weights; its metadata says
                                         the format, the stage and the stage's fingerprint

Loading never runs code from a file: a recipe is TOML, exported weights are safetensors (a JSON
header and raw tensor bytes), and a run folder's checkpoints are unpickled only with
``weights_only=True`` behind a checksummed header (``checkpoint``), so a checkpoint holding any
object other than tensors and plain containers is refused with an error line.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from spnkit.core import build
from spnkit.core import recipe as recipes
from spnkit.core.errors import SpnkitError
from spnkit.core.plugins import Registry, UnknownPluginError, default_registry
from spnkit.core.system import Pipeline
from spnkit.engine import checkpoint
from spnkit.engine.out_folder import prepare, replace_file, writing
from spnkit.engine.run_record import PLUGINS, RECIPE, write_run_record

FORMAT = "spnkit-export 1"
WEIGHTS = "model.safetensors"


class LoadError(SpnkitError):
    """A folder that is not a trained run or an export, or files in it that cannot be used."""


def load(path: str | Path, device: str | torch.device | None = None, registry: Registry | None = None) -> Pipeline:
    """The trained ``Pipeline`` in ``path``, a run folder (``spnkit run ... --out PATH``: every
    stage's Polyak-averaged weights from its latest usable checkpoint) or a folder written by
    ``spnkit export``, in eval mode on ``device`` (default: CUDA when available, else the CPU)."""
    folder = Path(path)
    registry = registry or default_registry()
    resolved = read_recipe(folder, registry)
    _check_plugins(folder, registry)
    if any((folder / "stages" / name / WEIGHTS).exists() for name in resolved.stages):
        pipeline = _exported(resolved, folder)
    else:
        pipeline = checkpoint.load_trained(resolved, folder)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return pipeline.to(device).eval()


def export(run: Path, out: Path, registry: Registry | None = None) -> str:
    """Write the trained system in the run folder ``run`` into ``out`` (a new or empty folder):
    its resolved recipe, the plugins that built it and each stage's Polyak-averaged weights as
    safetensors. Returns a line saying what was written."""
    resolved = read_recipe(run, registry or default_registry())
    pipeline = checkpoint.load_trained(resolved, run)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LoadError(f"-o {out}: exists and is not an empty folder; choose a new one")
    header = (f"# Exported by spnkit export from {run}: the resolved recipe of the weights beside it.\n"
              f"# In Python: spnkit.load({str(out)!r}) builds the trained pipeline.\n\n")
    prepare(out, "-o")
    write_run_record(resolved, out, header)
    weights = "polyak average" if resolved.recipe.train.ema else "raw"
    for name, stage in pipeline.stages.items():
        tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in stage.state_dict().items()}
        metadata = {"format": FORMAT, "stage": name, "fingerprint": checkpoint.stage_fingerprint(resolved, name),
                    "weights": weights}
        folder = out / "stages" / name
        with writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
        replace_file(folder / WEIGHTS, safetensors.torch.save(tensors, metadata))
    return f"wrote {out / RECIPE}, {out / PLUGINS} and {len(pipeline.stages)} x stages/NAME/{WEIGHTS}"


def read_recipe(folder: Path, registry: Registry) -> build.Resolved:
    """The resolved recipe of a run or export folder: ``recipe.toml``, or in a run folder from
    before run records, the one each stage's checkpoint keeps."""
    if not folder.is_dir():
        raise LoadError(f"{folder}: not a folder; give a run folder (spnkit run --out) or one written by spnkit export")
    path = folder / RECIPE
    if path.exists():
        raw = recipes.read_file(path)
    else:
        stages = sorted(p for p in (folder / "stages").glob("*") if (p / checkpoint.LATEST).exists())
        state = checkpoint.load(stages[0]) if stages else None
        if state is None or "recipe" not in state:
            raise LoadError(f"{folder}: no {RECIPE} and no stage checkpoints; not a run folder or an export")
        raw = recipes.tomllib.loads(state["recipe"])
    try:
        return build.validate(raw, registry)
    except recipes.RecipeError as exc:
        raise recipes.RecipeError([f"{path}: {line}" for line in exc.problems]) from None


def _check_plugins(folder: Path, registry: Registry) -> None:
    """Warn where a plugin's installed version is not the one that trained the weights."""
    try:
        used = json.loads((folder / PLUGINS).read_text())
    except (OSError, ValueError):
        return
    for item in used if isinstance(used, list) else []:
        try:
            entry = registry.get(item["kind"], item["name"])
        except (UnknownPluginError, KeyError, TypeError):
            continue  # validating the recipe reports a missing plugin
        if entry.provider.version != item.get("version"):
            warnings.warn(f"{folder}: {item['kind']} {item['name']!r} was {item.get('distribution')} "
                          f"{item.get('version')}; {entry.provider.distribution} {entry.provider.version} "
                          "is installed", stacklevel=3)


def _exported(resolved: build.Resolved, folder: Path) -> Pipeline:
    pipeline = build.build_pipeline(resolved)
    for name, stage in pipeline.stages.items():
        path = folder / "stages" / name / WEIGHTS
        try:
            with safetensors.safe_open(str(path), framework="pt") as file:
                metadata = file.metadata() or {}
                tensors = {key: file.get_tensor(key) for key in file.keys()}
        except FileNotFoundError:
            raise LoadError(f"{path}: missing; the export has no weights for stage {name!r}") from None
        except (OSError, safetensors.SafetensorError) as exc:
            raise LoadError(f"{path}: not a safetensors file ({exc})") from None
        if metadata.get("format") != FORMAT:
            raise LoadError(f"{path}: not written by spnkit export (format {metadata.get('format')!r})")
        if metadata.get("fingerprint") != checkpoint.stage_fingerprint(resolved, name):
            raise LoadError(f"{path}: holds stage {metadata.get('stage')!r} of another recipe than {folder / RECIPE}")
        try:
            stage.load_state_dict(tensors)
        except RuntimeError as exc:
            raise LoadError(f"{path}: does not fit stage {name!r} ({checkpoint.mismatch(exc)})") from None
    return pipeline
