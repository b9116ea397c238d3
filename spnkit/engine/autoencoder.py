"""Looking at models conditioned on continuous codes (van den Oord et al. 2016c): reconstructions
of a PixelCNN Auto-Encoder (an input image, then samples given its code) and samples along the
straight line between two codes (two images' codes, or two rows of vectors).

Side information here is what ``Pipeline.sample`` takes: a tensor ``[B, K]`` shared by every
conditional stage (vectors), or ``{stage: codes [B, m]}`` (``Pipeline.encode``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from spnkit.core import build
from spnkit.core.errors import SpnkitError
from spnkit.core.system import Pipeline
from spnkit.engine import images
from spnkit.engine.sampling_bar import sampling_bar

Side = torch.Tensor | Mapping[str, torch.Tensor]


class InputError(SpnkitError):
    """An image or vector file that cannot be used (unreadable, the wrong size)."""


def read_images(paths: list[Path], resolved: build.Resolved, option: str) -> torch.Tensor:
    """Image files as levels ``[N, C, H, W]`` long (``data.to_levels``); ``InputError`` naming
    ``option`` and the file for one that cannot be read or is not the recipe's size."""
    data = resolved.recipe.data
    found = []
    for path in paths:
        try:
            pixels = images.load_image(path, data.channels)
        except (OSError, ValueError) as exc:
            raise InputError(f"{option}: cannot read {path} ({exc})") from None
        if pixels.shape[1:] != (data.height, data.width):
            raise InputError(f"{option}: {path} is {pixels.shape[2]}x{pixels.shape[1]}, "
                             f"the recipe's images are {data.width}x{data.height}")
        found.append(pixels)
    return data.to_levels(torch.from_numpy(np.stack(found)))


def encoded_stages(resolved: build.Resolved, option: str) -> None:
    """``InputError`` unless some stage of the recipe encodes its own input image."""
    if not resolved.encoded:
        raise InputError(f"{option}: no stage of the recipe encodes its input image "
                         '(conditioner = { plugin = "image_encoder" })')


def repeat(side: Side, times: int) -> Side:
    """Each image's side information ``times`` times in a row (``repeat_interleave``)."""
    if isinstance(side, Mapping):
        return {name: value.repeat_interleave(times, dim=0) for name, value in side.items()}
    return side.repeat_interleave(times, dim=0)


def lerp(a: Side, b: Side, weight: float) -> Side:
    """``(1 - weight) * a + weight * b``, exactly ``a`` at 0 and ``b`` at 1."""
    if isinstance(a, Mapping):
        return {name: lerp(a[name], b[name], weight) for name in a}
    return (1 - weight) * a + weight * b


def _sample(resolved: build.Resolved, pipeline: Pipeline, count: int, side: Side, seed: int,
            temperature: float | None) -> torch.Tensor:
    """``count`` images ``[N, C, H, W]`` long given ``side``, drawn with a generator seeded
    ``seed``; each stage at ``temperature`` (default: its recipe's)."""
    recipe = resolved.recipe
    temperatures = {name: stage.temperature if temperature is None else temperature
                    for name, stage in recipe.stages.items()}
    generator = torch.Generator().manual_seed(seed)
    return pipeline.sample(count, recipe.data.shape, temperatures=temperatures, generator=generator, side=side)


def reconstructions(resolved: build.Resolved, pipeline: Pipeline, levels: torch.Tensor, samples: int,
                    seed: int, temperature: float | None = None, progress: bool = False) -> np.ndarray:
    """The paper's figure: for each image of ``levels [N, C, H, W]``, the image, then
    ``samples`` images drawn given its code; ``[N * (samples + 1), C, H, W]`` uint8, row by row.
    ``progress``: a bar over the subpixels drawn."""
    device = next(pipeline.parameters()).device
    with torch.no_grad():
        codes = pipeline.encode(levels.to(device))
    with sampling_bar(pipeline, len(levels) * samples, enabled=progress):
        drawn = _sample(resolved, pipeline, len(levels) * samples, repeat(codes, samples), seed, temperature)
    rows = torch.cat([levels.unsqueeze(1), drawn.cpu().view(len(levels), samples, *levels.shape[1:])], dim=1)
    return resolved.recipe.data.to_pixels(rows.flatten(0, 1)).numpy()


def interpolation(resolved: build.Resolved, pipeline: Pipeline, a: Side, b: Side, steps: int, rows: int,
                  seed: int, temperature: float | None = None, progress: bool = False) -> np.ndarray:
    """Samples along the straight line from side ``a`` to ``b`` (each for one image): column
    ``j`` of ``steps`` is given ``lerp(a, b, j / (steps - 1))``, and every column is drawn with
    the same noise (the generator seeded ``seed`` anew), so what changes along a row is the
    code's doing alone. ``[rows * steps, C, H, W]`` uint8, row by row. ``progress``: a bar
    over the subpixels drawn, all columns."""
    columns = []
    with sampling_bar(pipeline, rows * steps, enabled=progress, passes=steps):
        for j in range(steps):
            side = repeat(lerp(a, b, j / (steps - 1)), rows)
            columns.append(_sample(resolved, pipeline, rows, side, seed, temperature).cpu())
    grid = torch.stack(columns, dim=1)  # [rows, steps, C, H, W]
    return resolved.recipe.data.to_pixels(grid.flatten(0, 1)).numpy()


def vector_row(spec: str, size: int) -> torch.Tensor:
    """``FILE.npy:ROW`` -> that row of the array ``[N, size]``, as ``[1, size]`` float32."""
    path, _, row = spec.rpartition(":")
    if not path or not row.isdigit():
        raise InputError(f"--interpolate: expected FILE.npy:ROW for a vector-conditioned recipe, got {spec!r}")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"--interpolate: cannot read {path} ({exc})") from None
    if array.ndim != 2 or array.shape[1] != size:
        raise InputError(f"--interpolate: {path} holds an array of shape {list(array.shape)}; "
                         f"the recipe's stages take vectors [N, {size}]")
    if int(row) >= len(array):
        raise InputError(f"--interpolate: {path} has {len(array)} rows, got row {row}")
    return torch.from_numpy(np.asarray(array[int(row)], dtype=np.float32))[None]


def endpoints(resolved: build.Resolved, pipeline: Pipeline, a: str, b: str) -> tuple[Side, Side]:
    """The side information at the ends of ``--interpolate A B``: two images' codes for recipes
    whose stages encode their input, two rows ``FILE.npy:ROW`` for vector-conditioned ones;
    anything else is an ``InputError``."""
    side = resolved.side
    if side is not None and side.kind == "vectors" and resolved.encoded:
        raise InputError("--interpolate: the recipe's stages take vectors and their own codes; "
                         "interpolate one kind at a time in Python (Pipeline.sample with side per stage)")
    if side is not None and side.kind == "vectors":
        return vector_row(a, side.size), vector_row(b, side.size)
    if side is not None or not resolved.encoded:
        what = f"take {side}" if side is not None else "are unconditional"
        raise InputError(f"--interpolate: the recipe's stages {what}; interpolation needs a continuous "
                         "conditioner (vector, image_encoder)")
    levels = read_images([Path(a), Path(b)], resolved, "--interpolate")
    device = next(pipeline.parameters()).device
    with torch.no_grad():
        codes = pipeline.encode(levels.to(device))
    return ({name: code[:1] for name, code in codes.items()}, {name: code[1:] for name, code in codes.items()})
