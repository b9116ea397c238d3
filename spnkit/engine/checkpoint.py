"""Stage checkpoints: atomic files that survive a crash at any moment, what they are tied to
(the stage's fingerprint, plugin versions), and loading a trained pipeline from them.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over ``checkpoint.pt``; the one it replaces is kept as ``checkpoint.prev.pt``. Loading uses
``weights_only=True`` and falls back to the previous checkpoint when the latest is damaged.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from spnkit.core import build
from spnkit.core.errors import SpnkitError
from spnkit.core.system import Pipeline

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
REQUIRED = ("stage", "fingerprint", "model", "ema", "optimizer", "step")


class CheckpointError(SpnkitError):
    """Checkpoints exist but none can be read; the message names them and why."""


class RecipeMismatch(SpnkitError):
    """A checkpoint was trained from a different recipe for this stage."""


def stage_fingerprint(resolved: build.Resolved, name: str) -> str:
    """What a stage's weights depend on: its table, the data's shape and the quantizer."""
    raw = resolved.to_dict()
    return json.dumps({"stage": raw["stages"][name], "quantizer": raw["quantizer"],
                       "data": {k: raw["data"][k] for k in ("height", "width", "channels", "bits")}}, sort_keys=True)


def plugin_versions(resolved: build.Resolved) -> dict[str, str]:
    """``{"kind:name": "distribution version"}`` of every component the recipe uses."""
    chosen = [resolved.quantizer_choice]
    for plan in resolved.stages.values():
        chosen += [c for c in (plan.ordering, plan.encoder, plan.decoder, plan.conditioner) if c is not None]
    return {f"{c.entry.kind}:{c.entry.name}": f"{c.entry.provider.distribution} {c.entry.provider.version}"
            for c in chosen}


def load_trained(resolved: build.Resolved, out: Path) -> Pipeline:
    """The pipeline with every stage's Polyak-averaged weights from ``out/stages/NAME``."""
    pipeline = build.build_pipeline(resolved)
    for name, stage in pipeline.stages.items():
        state = load(out / "stages" / name)
        if state is None:
            raise CheckpointError(f"no checkpoint for stage {name!r} in {out / 'stages' / name}; train it first")
        if state["fingerprint"] != stage_fingerprint(resolved, name):
            raise RecipeMismatch(f"{out / 'stages' / name} holds stage {name!r} of a different recipe")
        stage.load_state_dict(state["ema"])
    return pipeline.eval()


def save(state: dict, folder: Path) -> Path:
    """Write ``state`` (tensors and plain containers only) as the latest checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        latest = folder / LATEST
        if latest.exists():
            os.replace(latest, folder / PREVIOUS)
        os.replace(temporary, latest)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return folder / LATEST


def _read(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"not an spnkit stage checkpoint (no {', '.join(missing)})")
    return state


def load(folder: Path) -> dict | None:
    """The newest readable checkpoint in ``folder`` (None if there is none); a damaged latest
    one is reported with a warning naming the file and the reason, and the previous one used.
    ``CheckpointError`` when checkpoints exist but none is readable."""
    reasons = []
    for name in (LATEST, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            return _read(path)
        except Exception as exc:  # truncated or corrupt file: try the previous one
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"checkpoint {path} is unreadable ({type(exc).__name__}: {first_line})"
            reasons.append(reason)
            if name == LATEST and (folder / PREVIOUS).exists():
                warnings.warn(f"{reason}; falling back to the previous one", stacklevel=2)
    if reasons:
        raise CheckpointError("; ".join(reasons) + f"; no usable checkpoint is left in {folder} "
                              "(delete the folder to start this stage over)")
    return None
