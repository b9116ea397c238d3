"""The images ``spnkit compress`` reads: image files, folders of them (searched recursively), IDX
files and ``.npy``/``.npz`` arrays, each checked against the recipe's shape, channels and bits,
and named so that ``decompress`` can write it back under the same name.

Names: an image file's stem (``fm_003.png`` -> ``fm_003``); a folder's images their path inside
it with ``_`` for ``/`` (``shirts/fm_003.png`` -> ``shirts_fm_003``); array images
``STEM_0000123`` (the array file's stem, the image's index). Names are made of letters, digits,
``_`` and ``-`` only, and two inputs with one name are an error.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spnkit.data import DataError
from spnkit.data.config import DataConfig
from spnkit.data.writer import IMAGE_SUFFIXES, Item, collect

NAME = re.compile(r"[A-Za-z0-9_-]+")


def read_inputs(paths: list[Path], data: DataConfig) -> tuple[torch.Tensor, list[str]]:
    """Every image of ``paths`` in order: levels ``[N, C, H, W]`` long (``data.to_levels``) and
    their names; ``DataError`` naming the input for anything that does not fit ``data``."""
    if not paths:
        raise DataError("no input images given")
    items = [item for path in paths for item in _items(path)]
    seen: dict[str, Item] = {}
    for item in items:
        if item.key in seen:
            raise DataError(f"two inputs are both named {item.key!r} ({_where(seen[item.key])} and {_where(item)}): "
                            "decompress could not write both; rename one")
        seen[item.key] = item
    pixels = np.stack([_checked(item, data) for item in items])
    return data.to_levels(torch.from_numpy(pixels)), [item.key for item in items]


def _items(path: Path) -> list[Item]:
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [Item(re.sub(r"[^A-Za-z0-9_-]", "_", path.stem), path)]
    return collect([path]).items


def _where(item: Item) -> str:
    return str(item.payload) if isinstance(item.payload, Path) else f"image {item.key}"


def _checked(item: Item, data: DataConfig) -> np.ndarray:
    """The item's pixels ``[C, H, W]`` uint8, or ``DataError`` when they do not fit ``data``."""
    where = _where(item)
    pixels = item.payload if isinstance(item.payload, np.ndarray) else _read(item.payload, data.channels)
    if pixels.shape != data.shape:
        raise DataError(f"{where}: an image of {pixels.shape[0]} channel(s), {pixels.shape[2]}x{pixels.shape[1]}; "
                        f"the recipe's images have {data.channels}, {data.width}x{data.height}")
    dropped = (1 << (8 - data.bits)) - 1
    if np.any(pixels & dropped):
        raise DataError(f"{where}: has pixel values the recipe's {data.bits} bits cannot hold (data.bits = "
                        f"{data.bits} keeps the {data.bits} most significant bits): it would not come back as it is")
    return pixels


def _read(path: Path, channels: int) -> np.ndarray:
    """A grey (``channels == 1``) or RGB image file as ``[C, H, W]`` uint8; other modes are errors."""
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as image:
            if image.mode != mode:
                raise DataError(f"{path}: a {image.mode} image; the recipe's images are {mode} "
                                f"({channels} channel{'s' if channels > 1 else ''}, 8 bits each)")
            array = np.asarray(image)
    except (OSError, ValueError) as exc:  # unreadable, not an image, truncated
        raise DataError(f"{path}: cannot read the image ({exc})") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
