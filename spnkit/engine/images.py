"""PNG output: image grids and training curves, drawn with Pillow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


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


def save_grid(images: np.ndarray, path: Path, columns: int | None = None, scale: int = 2) -> np.ndarray:
    """``images [N, C, H, W]`` uint8 (C = 1 or 3) -> one PNG grid (see ``grid``), each pixel
    ``scale`` x ``scale``; returns the grid."""
    tiled = grid(images, columns)
    picture = Image.fromarray(tiled[..., 0] if tiled.shape[2] == 1 else tiled)
    picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST).save(path)
    return tiled


def load_image(path: Path, channels: int) -> np.ndarray:
    """A PNG as ``[C, H, W]`` uint8 (converted to grayscale or RGB)."""
    with Image.open(path) as image:
        array = np.array(image.convert("L" if channels == 1 else "RGB"))
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def plot_curves(records: list[dict], path: Path, size: tuple[int, int] = (640, 400)) -> None:
    """Training bits/dim per stage against steps, one line per stage."""
    records = [r for r in records if "stage" in r]  # training records, not evaluations
    width, height = size
    left, right, top, bottom = 60, 20, 30, 40
    picture = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(picture)
    stages = list(dict.fromkeys(r["stage"] for r in records))
    if not records:
        draw.text((left, top), "no training records", fill="black")
        picture.save(path)
        return
    steps = [r["step"] for r in records]
    values = [r["bits_per_dim"] for r in records]
    x0, x1 = min(steps), max(max(steps), min(steps) + 1)
    y0, y1 = min(values), max(max(values), min(values) + 1e-6)

    def point(step: float, value: float) -> tuple[float, float]:
        return (left + (step - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (value - y0) / (y1 - y0) * (height - top - bottom))

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for value in np.linspace(y0, y1, 5):
        _, y = point(x0, value)
        draw.text((5, y - 6), f"{value:.2f}", fill="black")
    draw.text((left, height - bottom + 8), f"step {x0}", fill="black")
    draw.text((width - right - 80, height - bottom + 8), f"step {x1}", fill="black")
    draw.text((left, 8), "training bits/dim (each stage over its own subpixels)", fill="black")
    for k, stage in enumerate(stages):
        colour = COLOURS[k % len(COLOURS)]
        line = [point(r["step"], r["bits_per_dim"]) for r in records if r["stage"] == stage]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        draw.text((width - right - 120, top + 8 + 14 * k), stage, fill=colour)
    picture.save(path)
