"""The walk that encoder and decoder share: every subpixel of a chunk of images, stage by stage
in pipeline order, slice by slice, pixel by pixel (raster) and channel by channel, each through
the decoder's own incremental path (``SliceDecoder.slice_cache``), as sampling generates them.

At each subpixel the walk turns the logits into probability tables by the one rule
(``entropy.probabilities``) and asks ``choose`` for the values: the encoder answers with the
true ones (and records the tables), the decoder with the ones it decodes. So both run the same
code on the same inputs, and the values set so far are the same on both sides.
"""

from __future__ import annotations

from typing import Callable

import attrs
import numpy as np
import torch

from spnkit.codec.entropy import probabilities
from spnkit.core.sampling import PixelInputs
from spnkit.core.system import AutoregressiveStage, Pipeline


@attrs.frozen
class Step:
    """Where the walk is: stage ``stage``, slice ``slice``, subpixel (channel, row, col) of it."""

    stage: str
    slice: int
    channel: int
    row: int
    col: int


Choose = Callable[[Step, np.ndarray], torch.Tensor]
"""``(step, tables [K, L] float64) -> values [K] long`` of the subpixel at ``step`` in each image."""


@torch.no_grad()
def walk(pipeline: Pipeline, shape: tuple[int, int, int], chunk: int, choose: Choose) -> torch.Tensor:
    """Every stage over ``chunk`` images of ``shape`` ``(C, H, W)``; returns the chosen images,
    ``[chunk, C, H, W]`` long levels."""
    device = next(pipeline.parameters()).device
    planes = [torch.zeros(chunk, *shape, dtype=torch.long, device=device) for _ in pipeline.quantizer.plane_bits]
    for name, stage in pipeline.stages.items():
        plane, down = pipeline.placements[name]
        prefix, cond = pipeline.stage_inputs(name, planes)
        planes[plane][..., ::down, ::down] = _walk_stage(name, stage, prefix, cond, choose)
    return pipeline.quantizer.decode(planes)


def _walk_stage(name: str, stage: AutoregressiveStage, prefix: torch.Tensor, cond: torch.Tensor | None,
                choose: Choose) -> torch.Tensor:
    """One stage: its given slices from ``prefix [K, C, H, W]``, the others chosen; ``[K, C, H, W]``."""
    chunk = prefix.shape[0]
    dtype = next(stage.decoder.parameters()).dtype
    slices = torch.zeros(chunk, stage.num_slices, stage.channels, stage.slice_height, stage.slice_width,
                         dtype=torch.long, device=prefix.device)
    slices[:, : stage.given_slices] = stage.ordering.to_slices(prefix)[:, : stage.given_slices]
    like = torch.empty(chunk, stage.levels, stage.channels, stage.slice_height, stage.slice_width,
                       dtype=dtype, device=prefix.device)  # PixelInputs takes shape, dtype and device from it
    for t in range(stage.given_slices, stage.num_slices):
        inputs = PixelInputs(like)
        cache = stage.decoder.slice_cache(inputs, stage.slice_context(slices, t, cond))
        for row in range(stage.slice_height):
            for col in range(stage.slice_width):
                cache.start_pixel(row, col)
                for channel in range(stage.channels):
                    tables = probabilities(cache.channel_logits(row, col, channel))
                    inputs.set(row, col, channel, choose(Step(name, t, channel, row, col), tables).to(prefix.device))
            cache.finish_row(row)
        slices[:, t] = inputs.values
    return stage.ordering.from_slices(slices, stage.height, stage.width)
