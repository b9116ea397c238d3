"""Named data sources for recipes' ``[data]`` table, each a list of shards for the loader.

* ``fashion_mnist``: the full set from /usr/share/datasets/fashion-mnist when it is installed
  (``apt-get install dataset-fashion-mnist``), else the subset that ships with spnkit;
* ``fashion_mnist_embedded`` / ``fashion_mnist_full``: one of the two, explicitly;
* ``shards``: WebDataset tar shards named by ``data.train`` / ``data.test`` (a path, a brace
  pattern such as ``train-{000000..000026}.tar``, or a glob). A ``manifest.json`` beside them
  (written by ``spnkit shard``) is checked against the files and the recipe.
"""

from __future__ import annotations

import glob
import json
import warnings
from pathlib import Path

import attrs
import braceexpand

from spnkit.data import DataError
from spnkit.data.config import DataConfig
from spnkit.data.idx import read_idx
from spnkit.data.loader import Shard, array_shards, tar_shards
from spnkit.data.writer import MANIFEST

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
EMBEDDED = Path(__file__).parent / "embedded"
SPLIT_FILES = {"train": "train", "test": "t10k"}
SOURCES = ("fashion_mnist", "fashion_mnist_embedded", "fashion_mnist_full", "shards")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]


@attrs.frozen
class Split:
    shards: list[Shard]
    origin: str
    samples: int | None  # when known without reading every shard
    classes: list[str] | None = None  # class names by label, when the source names them


def _fashion_mnist(folder: Path, split: str, origin: str) -> Split:
    stem = SPLIT_FILES[split]
    images_path, labels_path = folder / f"{stem}-images-idx3-ubyte.gz", folder / f"{stem}-labels-idx1-ubyte.gz"
    images = read_idx(images_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: holds an array of {images.shape}, not 28x28 images")
    if not len(images):
        raise DataError(f"{images_path}: holds no images (the {split} split would be empty)")
    labels = read_idx(labels_path)
    if labels.shape != (len(images),):
        raise DataError(f"{labels_path}: {labels.shape[0] if labels.ndim == 1 else labels.shape} labels for the "
                        f"{len(images)} images of {images_path.name}")
    return Split(array_shards(f"{origin} {split}", images[:, None], labels.astype("int64")), origin, len(images),
                 FASHION_MNIST_CLASSES)


def expand(pattern: str) -> list[str]:
    """Paths named by a brace pattern and/or glob, in order."""
    return [path for part in braceexpand.braceexpand(pattern) for path in (sorted(glob.glob(part)) or [part])]


def _manifest(urls: list[str], data: DataConfig, field: str) -> dict | None:
    path = Path(urls[0]).parent / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        described = (manifest["channels"], manifest["height"], manifest["width"])
        listed = {s["name"]: s for split in manifest["splits"].values() for s in split["shards"]}
        for name, entry in listed.items():
            if not all(isinstance(entry.get(k), int) and entry[k] >= 0 for k in ("bytes", "samples")):
                raise ValueError(f"shard {name!r} needs whole numbers 'bytes' and 'samples'")
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"data.{field}: {path} is not a shard manifest ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise DataError(f"data.{field}: cannot read {path} ({exc.strerror or exc})") from None
    if described != (data.channels, data.height, data.width):
        raise DataError(f"data.{field}: {path} describes images of {described} (C, H, W), the recipe says "
                        f"{(data.channels, data.height, data.width)}")
    sizes = {}
    for url in urls:
        entry = listed.get(Path(url).name)
        size = Path(url).stat().st_size
        if entry is None:
            warnings.warn(f"{url} is not in {path}; reading it without a known sample count", stacklevel=3)
        elif size != entry["bytes"]:
            warnings.warn(f"{url} has {size} bytes, {path} says {entry['bytes']}: it changed after "
                          "`spnkit shard` wrote it; reading what is there", stacklevel=3)
        else:
            sizes[Path(url).name] = entry["samples"]
    return {"sizes": sizes, "classes": manifest.get("classes")}


def _shards(data: DataConfig, split: str) -> Split:
    field = "train" if split == "train" else "test"
    pattern = getattr(data, field)
    if not pattern:
        raise DataError(f"data.{field}: no shard pattern given (source = \"shards\")")
    urls = expand(pattern)
    missing = [u for u in urls if not Path(u).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        how = f"make them with `{data.prepare}`" if data.prepare else "write shards with `spnkit shard`"
        raise DataError(f"data.{field}: {len(missing)} of {len(urls)} shards not found: {shown} ({how}, "
                        f"or point data.{field} at them)")
    manifest = _manifest(urls, data, field)
    shards = tar_shards(urls, manifest["sizes"] if manifest else None)
    known = all(s.size is not None for s in shards)
    if known and not sum(s.size for s in shards):
        raise DataError(f"data.{field}: the {len(shards)} shards of {pattern} hold no samples")
    samples = sum(s.size for s in shards) if known else None
    return Split(shards, pattern, samples, manifest["classes"] if manifest else None)


def load_split(data: DataConfig, split: str) -> Split:
    """The ``train`` or ``test`` shards that ``data`` names."""
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
        return _shards(data, split)
    else:
        raise DataError(f"data.source: unknown source {data.source!r}; expected one of {', '.join(SOURCES)}")
    if (data.channels, data.height, data.width) != (1, 28, 28):
        raise DataError(f"data: {found.origin} holds images of (1, 28, 28) (C, H, W), the recipe says "
                        f"{(data.channels, data.height, data.width)}")
    return found
