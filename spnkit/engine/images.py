"""PNG output: image grids, drawn with Pillow (plots of a run are in ``plots``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """``images [N, C, H, W]`` uint8 -> one grid ``[H', W', C]`` uint8 with 2-pixel white
    gutters, ``columns`` wide (default: square)."""
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    tiled = np.full((rows * (h + 2) + 2, columns * (w + 2) + 2, c), 255, dtype=np.uint8)
    for k, image in enumerate(images):
        r, col = divmod(k, columns)
        tiled[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + col * (w + 2) : 2 + col * (w + 2) + w] = image.transpose(1, 2, 0)
    return tiled


def save_grid(images: np.ndarray, path: Path, columns: int | None = None, scale: int = 2,
              row_names: list[str] | None = None) -> np.ndarray:
    """``images [N, C, H, W]`` uint8 (C = 1 or 3) -> one PNG grid (see ``grid``), each pixel
    ``scale`` x ``scale``, with ``row_names`` (if given) written left of the rows; returns the
    picture ``[H, W, C]`` uint8 as saved."""
    tiled = grid(images, columns)
    picture = Image.fromarray(tiled[..., 0] if tiled.shape[2] == 1 else tiled)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    if row_names:
        picture = _named_rows(picture, row_names, images.shape[2] + 2, scale)
    picture.save(path)
    array = np.asarray(picture)
    return array[..., None] if array.ndim == 2 else array


def _named_rows(picture: Image.Image, names: list[str], pitch: int, scale: int) -> Image.Image:
    """``picture`` with a white margin on its left holding ``names[r]`` beside grid row ``r``
    (rows ``pitch`` pixels apart before scaling)."""
    font = ImageFont.load_default(size=max(10, min(6 * scale, pitch * scale // 2)))
    width = max(int(font.getlength(name)) for name in names) + 8 * scale
    named = Image.new(picture.mode, (picture.width + width, picture.height), "white")
    named.paste(picture, (width, 0))
    draw = ImageDraw.Draw(named)
    for row, name in enumerate(names):
        centre = (2 + row * pitch + (pitch - 2) / 2) * scale
        draw.text((width - 4 * scale, centre), name, fill="black", font=font, anchor="rm")
    return named


def load_image(path: Path, channels: int) -> np.ndarray:
    """A PNG as ``[C, H, W]`` uint8 (converted to grayscale or RGB)."""
    with Image.open(path) as image:
        array = np.array(image.convert("L" if channels == 1 else "RGB"))
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
