"""Where a model spends its bits: the exact NLL of every subpixel of an image, in bits, summed
over the stages that model it (``spnkit eval --bits-map N``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from spnkit.core import build
from spnkit.core.interfaces import one_hot
from spnkit.core.system import Pipeline, subpixel_nll
from spnkit.data.loader import exact_batches
from spnkit.data.sources import Split, load_split
from spnkit.engine import plots


@torch.no_grad()
def subpixel_bits(pipeline: Pipeline, levels: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
    """``levels [B, C, H, W]`` long -> ``[B, C, H, W]`` float64: the bits each subpixel costs,
    from each stage's teacher-forced logits (``Stage.logits``) at the subpixels it models (its
    given slices are another stage's), placed back at full resolution. They sum to the
    system's ``-log_prob / ln 2``."""
    pipeline.check_side(side)
    planes = pipeline.quantizer.encode(levels)
    total = torch.zeros(levels.shape, dtype=torch.float64, device=levels.device)
    for name, stage in pipeline.stages.items():
        _, down = pipeline.placements[name]
        target, cond = pipeline.stage_inputs(name, planes)
        dtype = next(stage.parameters()).dtype
        nats = subpixel_nll(stage.logits(one_hot(target, stage.levels, dtype), cond, side), target)
        modelled = torch.zeros(target.shape[1:], dtype=torch.bool, device=levels.device)
        modelled[tuple(torch.tensor(stage.modelled_positions(), device=levels.device).T)] = True
        total[..., ::down, ::down] += torch.where(modelled, nats.double(), 0.0) / math.log(2)
    return total


def write_bits_map(resolved: build.Resolved, pipeline: Pipeline, count: int, path: Path,
                   test: Split | None = None) -> np.ndarray:
    """The first ``count`` test images beside the bits each pixel costs, as a PNG at ``path``;
    returns the bits per pixel ``[count, H, W]`` (channels summed)."""
    data = resolved.recipe.data
    test = test or load_split(data, "test")
    side = resolved.side
    taken: list[dict] = []
    for batch in exact_batches(test.shards, count, data.shape, side=side):
        taken.append({key: batch[key][batch["valid"]] for key in ("images", "labels", "vectors") if key in batch})
        if sum(len(t["images"]) for t in taken) >= count:
            break
    pixels = torch.cat([t["images"] for t in taken])[:count]
    given = None
    if side is not None:
        given = torch.cat([t[side.kind] for t in taken])[:count]
    device = next(pipeline.parameters()).device
    rows = [subpixel_bits(pipeline, data.to_levels(pixels[k:k + 1].to(device)),
                          None if given is None else given[k:k + 1].to(device)).sum(dim=1)[0].cpu()
            for k in range(len(pixels))]  # one image at a time: logits are [L, C, H, W] floats per image
    bits = torch.stack(rows).numpy()
    per_dim = [b.sum() / pixels[0].numel() for b in bits]
    titles = None
    if resolved.encoded:  # -log p(x | code of x): not a likelihood of x (see evaluate.given_code)
        titles = [f"test image {k}: {d:.3f} bits/dim given its code" for k, d in enumerate(per_dim)]
    elif side is not None and side.kind == "labels" and test.classes:
        titles = [f"{test.classes[int(label)]}: {d:.3f} bits/dim" for label, d in zip(given, per_dim)]
    plots.plot_bits_map(pixels.numpy(), bits, path, titles)
    return bits
