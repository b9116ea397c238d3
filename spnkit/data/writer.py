"""``spnkit shard``: images from folders, IDX files or numpy arrays into WebDataset tar shards.

Each sample is ``KEY.png`` (lossless, 8 bit, grey or RGB) plus ``KEY.cls`` (the class index as
text) when the source has labels and ``KEY.npy`` (a float32 vector) when it has side vectors.
Keys have no dots. ``manifest.json`` beside the shards records the image size, bit depth, class
names and, per split, every shard's sample count, byte size and SHA-256. The same input gives
byte-identical shards: the order is fixed (sorted paths, then a seeded shuffle so that every
shard is a random sample of the data), tar headers carry no time or user, and PNG encoding is
deterministic.

Sources:

* a folder, searched recursively for .png/.jpg/.jpeg; when every image sits in a first-level
  subfolder, the subfolder names are the classes (``class_name/image.png``);
* IDX image files (MNIST, Fashion-MNIST); labels come from the ``*-labels-idx1-ubyte*`` file
  beside them when there is one;
* ``.npy`` arrays ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` and ``.npz`` files with such an
  array under ``data`` (or their only array), optionally with ``labels``. The official
  downsampled-ImageNet batches (``data`` rows of 3*S*S bytes, channel-major; ``labels`` 1..1000)
  are recognised; their labels are stored 0-based. A ``vectors`` array ``[N, K]`` in an ``.npz``
  gives each image a side vector (for vector-conditioned stages).
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
import zipfile
import zlib
from pathlib import Path

import attrs
import numpy as np
import webdataset as wds
from PIL import Image
from tqdm import tqdm

from spnkit.data import DataError
from spnkit.data.idx import read_idx

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MANIFEST = "manifest.json"
FORMAT = "spnkit-shards/1"
SHUFFLE_SEED = 0


@attrs.frozen
class Item:
    """One source image: a file path or an array ``[C, H, W]`` uint8, its key and label."""

    key: str
    payload: Path | np.ndarray
    label: int | None = None
    vector: np.ndarray | None = None  # [K] float32 side information


@attrs.frozen
class Collected:
    items: list[Item]
    classes: list[str] | None  # class names, index = label


def _key(text: str) -> str:
    """A WebDataset key: no dots, no slashes."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _from_folder(folder: Path) -> Collected:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DataError(f"{folder}: no .png/.jpg/.jpeg images found")
    relative = [p.relative_to(folder) for p in paths]
    classes = None
    if all(len(r.parts) == 2 for r in relative):
        classes = sorted({r.parts[0] for r in relative})
    index = {name: i for i, name in enumerate(classes or [])}
    items, seen = [], {}
    for path, rel in zip(paths, relative):
        key = _key(str(rel.with_suffix("")))
        if key in seen:
            raise DataError(f"{folder}: {rel} and {seen[key]} map to the same key {key!r}; rename one")
        seen[key] = rel
        items.append(Item(key, path, index[rel.parts[0]] if classes else None))
    return Collected(items, classes)


def _labels_beside(path: Path, count: int) -> np.ndarray | None:
    name = path.name.replace("images-idx3-ubyte", "labels-idx1-ubyte")
    if name == path.name or not (path.parent / name).exists():
        return None
    labels = read_idx(path.parent / name)
    if labels.shape != (count,):
        raise DataError(f"{path.parent / name}: {labels.shape[0]} labels for {count} images")
    return labels


def _as_chw(array: np.ndarray, source: Path) -> np.ndarray:
    """``[N, H, W]`` / ``[N, H, W, C]`` / ``[N, C, H, W]`` / rows of ``3*S*S`` -> ``[N, C, H, W]``."""
    if array.dtype != np.uint8:
        raise DataError(f"{source}: expected uint8 pixels, got {array.dtype}")
    if array.ndim == 2:
        side = round((array.shape[1] / 3) ** 0.5)
        if 3 * side * side != array.shape[1]:
            raise DataError(f"{source}: rows of {array.shape[1]} bytes are not 3*S*S RGB images")
        return array.reshape(-1, 3, side, side)
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4 and array.shape[-1] in (1, 3):
        return array.transpose(0, 3, 1, 2)
    if array.ndim == 4 and array.shape[1] in (1, 3):
        return array
    raise DataError(f"{source}: cannot read images from an array of shape {array.shape}")


def _from_arrays(path: Path) -> Collected:
    if path.suffix not in (".npz", ".npy"):
        return _from_idx(path)
    try:
        return _from_numpy(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a readable numpy {path.suffix} file ({type(exc).__name__}: {exc})") from None


def _from_idx(path: Path) -> Collected:
    array = read_idx(path)
    return _collected(path, array, _labels_beside(path, array.shape[0]), None)


def _from_numpy(path: Path) -> Collected:
    labels = vectors = None
    if path.suffix == ".npz":
        with np.load(path) as archive:
            names = [n for n in archive.files if n not in ("labels", "mean", "vectors")]
            if "vectors" in archive.files:
                vectors = np.asarray(archive["vectors"], np.float32)
            if "data" not in archive.files and len(names) != 1:
                raise DataError(f"{path}: expected an array named 'data' (or a single array), found {archive.files}")
            array = archive["data" if "data" in archive.files else names[0]]
            if "labels" in archive.files:
                labels = np.asarray(archive["labels"]).astype(np.int64)
                if array.ndim == 2 and labels.min() >= 1:  # downsampled ImageNet: 1..1000
                    labels = labels - 1
    else:
        array = np.load(path)
    return _collected(path, array, labels, vectors)


def _collected(path: Path, array: np.ndarray, labels: np.ndarray | None, vectors: np.ndarray | None) -> Collected:
    images = _as_chw(array, path)
    if not images.shape[0]:
        raise DataError(f"{path}: holds no images")
    if labels is not None and labels.shape != (images.shape[0],):
        raise DataError(f"{path}: {labels.shape} labels for {images.shape[0]} images")
    if vectors is not None and (vectors.ndim != 2 or len(vectors) != images.shape[0]):
        raise DataError(f"{path}: vectors of shape {vectors.shape} for {images.shape[0]} images (expected [N, K])")
    stem = _key(path.name.split(".")[0])
    items = [Item(f"{stem}_{i:07d}", images[i], None if labels is None else int(labels[i]),
                  None if vectors is None else vectors[i]) for i in range(images.shape[0])]
    return Collected(items, None)


def collect(sources: list[Path]) -> Collected:
    """Every image of the given sources, in a fixed order."""
    collected = []
    for source in sources:
        if source.is_dir():
            collected.append(_from_folder(source))
        elif source.is_file():
            collected.append(_from_arrays(source))
        else:
            raise DataError(f"{source}: no such file or folder")
    for what, has in (("labels", lambda item: item.label is not None),
                      ("vectors", lambda item: item.vector is not None)):
        marks = [has(c.items[0]) for c in collected]
        if any(marks) and not all(marks):
            raise DataError(f"some sources have {what} and some do not; shard them separately")
    names = {tuple(c.classes) for c in collected if c.classes}
    if len(names) > 1:
        raise DataError("the folders name different classes: " + " / ".join(", ".join(n) for n in names))
    items = [item for c in collected for item in c.items]
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise DataError("two sources give images the same keys; shard them into separate folders")
    return Collected(items, list(next(iter(names))) if names else None)


# ----------------------------------------------------------------------------- encoding


@attrs.frozen
class Geometry:
    size: int | None  # output side (square); None: keep the source size
    resize: str = "area"  # "area" (box filter of the whole image) or "center-crop" (then box filter)


def area_weights(size: int, out: int) -> np.ndarray:
    """``[out, size]``: how much of input cell ``j`` lies under output cell ``i``, over the cell's
    width; rows sum to 1."""
    edges = np.arange(out + 1) * (size / out)
    starts, stops = np.arange(size), np.arange(1, size + 1)
    overlap = np.minimum(edges[1:, None], stops[None]) - np.maximum(edges[:-1, None], starts[None])
    return np.clip(overlap, 0, None) / (size / out)


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[H, W(, C)]`` uint8 -> ``[height, width(, C)]``: each output pixel is the exact average of
    the input area under it (TensorFlow's resize_area), rounded to the nearest integer."""
    rows, cols = area_weights(image.shape[0], height), area_weights(image.shape[1], width)
    averaged = np.einsum("ij,jk...,lk->il...", rows, image.astype(np.float64), cols)
    return np.clip(np.rint(averaged), 0, 255).astype(np.uint8)


def transform(image: Image.Image, geometry: Geometry) -> Image.Image:
    """Crop and resize as ``geometry`` says (``resize_area`` for the resize)."""
    if geometry.resize == "center-crop":
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if geometry.size is not None and image.size != (geometry.size, geometry.size):
        image = Image.fromarray(resize_area(np.asarray(image), geometry.size, geometry.size))
    return image


def _open(payload: Path | np.ndarray) -> Image.Image:
    if isinstance(payload, np.ndarray):
        return Image.fromarray(payload[0] if payload.shape[0] == 1 else payload.transpose(1, 2, 0))
    with Image.open(payload) as image:
        image.load()
    if image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode in ("1", "I", "I;16", "F") else "RGB")
    return image


def encode(job: tuple[Item, Geometry]) -> tuple[bytes, tuple[int, int, int]]:
    """PNG bytes of one item and its ``(C, H, W)``."""
    item, geometry = job
    try:
        image = transform(_open(item.payload), geometry)
    except (OSError, ValueError) as exc:
        raise DataError(f"{item.payload if isinstance(item.payload, Path) else item.key}: {exc}") from None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    channels = 1 if image.mode == "L" else 3
    return buffer.getvalue(), (channels, image.height, image.width)


# ----------------------------------------------------------------------------- splits and shards


def parse_split(text: str) -> list[tuple[str, str, float]]:
    """``train=0.95,test=0.05`` (fractions), ``train=27000,test=rest`` (counts; ``rest``: what is
    left) or ``test`` (everything) -> ``[(name, "fraction" | "count" | "rest", amount)]``."""
    parts = []
    for part in text.split(","):
        name, _, amount = part.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise DataError(f"--split: {name!r} is not a split name (letters, digits, _)")
        if not amount or amount == "rest":
            parts.append((name, "rest", 0.0))
        elif re.fullmatch(r"\d+", amount):
            parts.append((name, "count", int(amount)))
        elif re.fullmatch(r"\d*\.\d+", amount) and float(amount) <= 1:
            parts.append((name, "fraction", float(amount)))
        else:
            raise DataError(f"--split: {part!r}: expected NAME=FRACTION (0.05), NAME=COUNT (3000) or NAME=rest")
    if len({name for name, _, _ in parts}) != len(parts):
        raise DataError(f"--split: {text!r} names a split twice")
    return parts


def split_counts(parts: list[tuple[str, str, float]], total: int) -> dict[str, int]:
    """How many images each split gets, in order; fractions are rounded, ``rest`` takes what is
    left, and every image must land in a split."""
    counts = {name: round(amount * total) if kind == "fraction" else int(amount)
              for name, kind, amount in parts if kind != "rest"}
    rest = [name for name, kind, _ in parts if kind == "rest"]
    fractions = [amount for _, kind, amount in parts if kind == "fraction"]
    if fractions and not rest and abs(sum(fractions) - 1) < 1e-6:  # rounding: the last fraction takes the rest
        counts[parts[-1][0]] = total - sum(counts.values()) + counts[parts[-1][0]]
    left = total - sum(counts.values())
    described = ",".join(f"{n}={a:g}" if k != "rest" else f"{n}=rest" for n, k, a in parts)
    if left < 0 or len(rest) > 1 or (left and not rest):
        raise DataError(f"--split: {described} does not divide {total} images (end with NAME=rest to take the remainder)")
    if rest:
        counts[rest[0]] = left
    return {name: counts[name] for name, _, _ in parts}


def _write_tar(path: Path, samples: list[tuple[str, bytes, Item]]) -> dict:
    temporary = path.with_suffix(".tar.partial")
    with open(temporary, "wb") as stream:
        writer = wds.TarWriter(stream, user="spnkit", group="spnkit", mtime=0.0)
        for key, png, item in samples:
            sample = {"__key__": key, "png": png}
            if item.label is not None:
                sample["cls"] = str(item.label).encode()
            if item.vector is not None:
                buffer = io.BytesIO()
                np.save(buffer, item.vector)
                sample["npy"] = buffer.getvalue()
            writer.write(sample)
        writer.close()
    os.replace(temporary, path)
    data = path.read_bytes()
    return {"name": path.name, "samples": len(samples), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_shards(sources: list[Path], out: Path, geometry: Geometry, split: str = "train=0.95,test=0.05",
                 shard_size: int = 1000, workers: int | None = None, progress: bool = True) -> dict:
    """Shard ``sources`` into ``out/{split}-{k:06d}.tar`` and update ``out/manifest.json``; returns
    the manifest. Splits already in the manifest and not written now are kept."""
    if shard_size < 1:
        raise DataError(f"--shard-size: must be >= 1, got {shard_size}")
    collected = collect(sources)
    items = collected.items
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(items))
    counts = split_counts(parse_split(split), len(items))
    out.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out)
    jobs = [(items[i], geometry) for i in order]
    shape, splits, start = None, {}, 0
    with multiprocessing.get_context("fork").Pool(workers or os.cpu_count()) as pool:
        encoded = pool.imap(encode, jobs, chunksize=16)
        bar = tqdm(total=len(jobs), desc="shard", unit="img", disable=not progress, dynamic_ncols=True)
        for name, count in counts.items():
            _remove_old(out, manifest, name)
            shards = []
            for first in range(0, count, shard_size):
                batch = []
                for job in jobs[start + first : start + min(first + shard_size, count)]:
                    png, found = next(encoded)
                    if shape is None:
                        shape = found
                    elif found != shape:
                        raise DataError(f"{job[0].payload if isinstance(job[0].payload, Path) else job[0].key}: "
                                        f"image is {found} (C, H, W) after resizing, the others {shape}; "
                                        "use --size (and --resize center-crop for non-square images)")
                    batch.append((job[0].key, png, job[0]))
                    bar.update(1)
                shards.append(_write_tar(out / f"{name}-{len(shards):06d}.tar", batch))
            splits[name] = {"samples": count, "shards": shards}
            start += count
        bar.close()
    channels, height, width = shape
    described = {"format": FORMAT, "channels": channels, "height": height, "width": width, "bits": 8,
                 "labels": items[0].label is not None, "classes": collected.classes,
                 "vectors": None if items[0].vector is None else int(items[0].vector.size)}
    kept = {}
    if manifest and all(manifest.get(k) == v for k, v in described.items() if k != "classes"):
        kept = {k: v for k, v in manifest["splits"].items() if k not in splits}
    elif manifest:
        for name in manifest["splits"]:
            if name not in splits:
                _remove_old(out, manifest, name)
    described["splits"] = {**kept, **splits}
    (out / MANIFEST).write_text(json.dumps(described, indent=1) + "\n")
    return described


def _read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); delete it to start the folder over") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
        raise DataError(f"{path}: not a shard manifest (no 'splits' table); delete it to start the folder over")
    return manifest


def _remove_old(out: Path, manifest: dict | None, split: str) -> None:
    for shard in ((manifest or {}).get("splits", {}).get(split) or {}).get("shards", []):
        (out / shard["name"]).unlink(missing_ok=True)
