"""Named data sources for recipes' ``[data]`` table: arrays of images ``[N, C, H, W]`` uint8.

* ``fashion_mnist``: the full set from /usr/share/datasets/fashion-mnist when it is installed
  (``apt-get install dataset-fashion-mnist``), else the subset that ships with spnkit;
* ``fashion_mnist_embedded`` / ``fashion_mnist_full``: one of the two, explicitly;
* ``shards``: WebDataset tar shards named by ``data.train`` / ``data.test`` (brace patterns).
"""

from __future__ import annotations

import glob
import io
import tarfile
from pathlib import Path

import attrs
import braceexpand
import numpy as np
from PIL import Image

from spnkit.data.idx import read_idx
from spnkit.recipe import DataConfig

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
EMBEDDED = Path(__file__).parent / "embedded"
SPLIT_FILES = {"train": "train", "test": "t10k"}
SOURCES = ("fashion_mnist", "fashion_mnist_embedded", "fashion_mnist_full", "shards")


class DataError(Exception):
    """Data that is missing or does not match the recipe; the message names what and where."""


@attrs.frozen
class Split:
    images: np.ndarray  # [N, C, H, W] uint8
    origin: str


def _fashion_mnist(folder: Path, split: str, origin: str) -> Split:
    images = read_idx(folder / f"{SPLIT_FILES[split]}-images-idx3-ubyte.gz")
    return Split(images[:, None], origin)


def _shards(pattern: str, field: str) -> Split:
    if not pattern:
        raise DataError(f"data.{field}: no shard pattern given (source = \"shards\")")
    urls = [u for part in braceexpand.braceexpand(pattern) for u in (glob.glob(part) or [part])]
    missing = [u for u in urls if not Path(u).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"data.{field}: {len(missing)} of {len(urls)} shards not found: {shown} "
                        "(write shards with `spnkit shard`, or point data.train/data.test at them)")
    images = []
    for url in urls:
        with tarfile.open(url) as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                if member.name.endswith(".png"):
                    with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                        array = np.asarray(image)
                    images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return Split(np.stack(images), pattern)


def load_split(data: DataConfig, split: str) -> Split:
    """The ``train`` or ``test`` images that ``data`` names, checked against its declared shape."""
    if data.source == "fashion_mnist":
        full = SYSTEM_FASHION_MNIST.is_dir()
        found = _fashion_mnist(SYSTEM_FASHION_MNIST if full else EMBEDDED, split,
                               "fashion-mnist (full set)" if full else "fashion-mnist (embedded subset)")
    elif data.source == "fashion_mnist_embedded":
        found = _fashion_mnist(EMBEDDED, split, "fashion-mnist (embedded subset)")
    elif data.source == "fashion_mnist_full":
        if not SYSTEM_FASHION_MNIST.is_dir():
            raise DataError(f"data.source: {SYSTEM_FASHION_MNIST} not found (apt-get install dataset-fashion-mnist)")
        found = _fashion_mnist(SYSTEM_FASHION_MNIST, split, "fashion-mnist (full set)")
    elif data.source == "shards":
        found = _shards(data.train if split == "train" else data.test, split)
    else:
        raise DataError(f"data.source: unknown source {data.source!r}; expected one of {', '.join(SOURCES)}")
    shape = (data.channels, data.height, data.width)
    if found.images.shape[1:] != shape:
        raise DataError(f"data: {found.origin} holds images of {found.images.shape[1:]} (C, H, W), "
                        f"the recipe says {shape}")
    return found
