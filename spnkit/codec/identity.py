"""The model's fingerprint: what a compressed file is tied to, so that another model's file is
refused instead of decoded into garbage."""

from __future__ import annotations

import hashlib
import json

import torch

from spnkit.core.system import Pipeline


def fingerprint(pipeline: Pipeline, recipe: str = "") -> bytes:
    """SHA-256 of ``recipe`` (the text that built the pipeline, if any), the pipeline's
    structure (components and their options) and every weight's bytes: 32 bytes."""
    digest = hashlib.sha256(recipe.encode())
    digest.update(_structure(pipeline).encode())
    for key, tensor in pipeline.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"\n{key} {flat.dtype} {list(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.digest()


def _structure(pipeline: Pipeline) -> str:
    """What builds the pipeline besides its weights: components, options, shapes, placements."""
    def part(component: object) -> str | None:
        return None if component is None else f"{type(component).__qualname__} {getattr(component, 'options', None)!r}"

    return json.dumps({
        "quantizer": [part(pipeline.quantizer), pipeline.quantizer.plane_bits, pipeline.quantizer.in_bits],
        "stages": {name: [pipeline.placements[name], stage.channels, stage.height, stage.width, stage.levels,
                          stage.cond_levels, stage.given_slices, part(stage.ordering), part(stage.encoder),
                          part(stage.decoder), part(stage.conditioner)]
                   for name, stage in pipeline.stages.items()},
    })
