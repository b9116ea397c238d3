"""The streaming loader: shards in, fixed-shape batches out, for training and exact evaluation.

A *shard* is a WebDataset tar file or a slice of an in-memory array (the embedded and system
Fashion-MNIST go through the same code). Each shard is read as a list of records (raw bytes,
decoded lazily); a damaged record becomes a ``Skip`` naming its shard and key.

Training (``TrainingBatches``) is made of ``streams`` infinite resampled sample streams; each
global batch takes an equal part from every stream, and ranks split the streams between them.
Stream ``s`` runs rounds; round ``k`` draws a shard (with replacement), an order of its records
and a uniform number per record (which picks the sample's target slice) from a generator seeded
by ``(seed, generation, s, k)``. Parts carry a cursor ``(round, position)``; the consumer keeps
the cursor of the last part it took from each stream, so a checkpointed run resumes exactly
where it stopped, whatever the workers had prefetched. Streams are infinite, so ranks take
equal numbers of equal batches (no DDP hang, no XLA recompile).

Evaluation (``exact_batches``) is one pass: shard ``j`` goes to global worker
``j mod (ranks * workers)``, so every image is seen exactly once across ranks and workers.
Its batches are padded to ``batch_size`` with a ``valid`` mask, keeping shapes fixed.

Skips are reported with a warning the first time each (shard, key) is seen; more than
``max_bad`` distinct damaged samples stop the run with a ``DataError``.
"""

from __future__ import annotations

import abc
import io
import re
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import attrs
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import base_plus_ext

from spnkit.core.interfaces import SideInfo
from spnkit.data import DataError

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "ppm", "pgm")
NO_LABEL = -1


class Sample(NamedTuple):
    """A decoded sample: its key, image ``[C, H, W]`` uint8, label (-1: none) and side
    vector ``[K]`` float32 (None: none)."""

    key: str
    image: np.ndarray
    label: int
    vector: np.ndarray | None = None


@attrs.frozen
class Skip:
    """A sample that could not be used."""

    shard: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"sample {self.key!r} in {self.shard}: {self.reason}"


class Shard(abc.ABC):
    """A unit of reading: ``records()`` in stored order, ``decode(record)`` one at a time."""

    name: str
    size: int | None  # samples, when known without reading

    def __str__(self) -> str:
        return self.name

    @abc.abstractmethod
    def records(self) -> list:
        """Every record (raw, undecoded) and ``Skip`` for what could not be read, in order."""

    @abc.abstractmethod
    def decode(self, record, shape: tuple[int, int, int]) -> Sample | Skip:
        """The ``Sample`` that ``record`` holds, or a ``Skip``."""


@attrs.frozen
class ArrayShard(Shard):
    """Images ``[N, C, H, W]`` uint8 (and labels ``[N]``) from ``start`` to ``stop``."""

    name: str
    images: np.ndarray = attrs.field(repr=False)
    labels: np.ndarray | None = attrs.field(repr=False)
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def records(self) -> list:
        return list(range(self.start, self.stop))

    def decode(self, record: int, shape: tuple[int, int, int]):
        label = NO_LABEL if self.labels is None else int(self.labels[record])
        return Sample(f"{record:08d}", self.images[record], label)


def array_shards(name: str, images: np.ndarray, labels: np.ndarray | None, size: int = 1000) -> list[ArrayShard]:
    """``images`` cut into shards of ``size``."""
    return [ArrayShard(f"{name}[{start}:{min(start + size, len(images))}]", images, labels, start,
                       min(start + size, len(images))) for start in range(0, len(images), size)]


@attrs.frozen
class TarShard(Shard):
    """A WebDataset tar file: consecutive members ``KEY.EXT`` form one sample."""

    name: str
    size: int | None = None

    def records(self) -> list:
        records: list = []
        current_key, parts, reading = None, {}, None
        try:
            with tarfile.open(self.name, "r:") as tar:
                for member in tar:
                    if not member.isreg():
                        continue
                    key, extension = base_plus_ext(member.name)
                    if key is None:
                        continue
                    if key != current_key:
                        if current_key is not None:
                            records.append((current_key, parts))
                        current_key, parts = key, {}
                    reading = key
                    parts[extension.lower()] = tar.extractfile(member).read()
                    reading = None
                end = _end_problem(tar)
            if end is not None:  # tarfile stops quietly at a cut-off or unreadable header
                records.append(Skip(self.name, f"after {current_key or 'the start'}", end))
        except (tarfile.TarError, OSError, EOFError) as exc:
            if reading is not None:  # the sample being read is incomplete: drop it
                current_key = None
            where = reading or (f"after {current_key or (records[-1][0] if records else 'the start')}")
            records.append(Skip(self.name, where, _reason(exc)))
        if current_key is not None:
            records.append((current_key, parts))
        return records

    def decode(self, record, shape: tuple[int, int, int]):
        key, parts = record
        extension = next((e for e in IMAGE_EXTENSIONS if e in parts), None)
        if extension is None:
            return Skip(self.name, key, f"no image (found {', '.join(sorted(parts)) or 'no files'})")
        try:
            with Image.open(io.BytesIO(parts[extension])) as image:
                if image.mode not in ("L", "RGB"):
                    return Skip(self.name, key, f"the .{extension} image has mode {image.mode}, not L (grey) or "
                                                "RGB; re-shard it with `spnkit shard`")
                array = np.asarray(image)
            label = int(parts["cls"].decode()) if "cls" in parts else NO_LABEL
            vector = np.load(io.BytesIO(parts["npy"])).astype(np.float32).reshape(-1) if "npy" in parts else None
        except UnidentifiedImageError:
            return Skip(self.name, key, f"the .{extension} file is not an image that PIL can read")
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            return Skip(self.name, key, _reason(exc))
        if array.dtype != np.uint8:
            return Skip(self.name, key, f"pixels are {array.dtype}, not 8 bit")
        image = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        if image.shape != shape:
            return Skip(self.name, key, f"image is {image.shape} (C, H, W), the recipe says {shape}")
        return Sample(key, image, label, vector)


def _end_problem(tar: tarfile.TarFile) -> str | None:
    """Why the archive does not end where ``tar`` stopped reading: tarfile ends its iteration
    quietly at a file cut off between members or at an unreadable header, and every sample
    after that point would be lost without a word. None: a proper end-of-archive block."""
    tar.fileobj.seek(tar.offset)
    block = tar.fileobj.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE:
        return (f"the file ends at byte {tar.offset + len(block)} without a tar end-of-archive marker "
                "(cut short?); samples after it are lost")
    if block.count(0) != len(block):
        return f"unreadable tar header at byte {tar.offset}; the rest of the shard cannot be read"
    return None


def _reason(exc: Exception) -> str:
    """An exception as a reason for a warning, without reprs of in-memory objects."""
    return f"{type(exc).__name__}: {re.sub(r'<[^<>]* at 0x[0-9A-Fa-f]+>', 'the data', str(exc))}"


def side_problem(sample: Sample, shard: Shard, side: SideInfo | None) -> str | None:
    """Why ``sample`` lacks the side information a recipe takes; None when it has it, or when
    the recipe takes none."""
    if side is None:
        return None
    kind, size = side.kind, side.size
    where = f"data: sample {sample.key!r} in {shard.name}"
    if kind == "vectors":
        if sample.vector is None:
            return f"{where} has no vector (.npy), but the recipe's stages are conditioned on vectors of {size}"
        if sample.vector.shape != (size,):
            return f"{where} has a vector of {sample.vector.size} values, the recipe's conditioner takes {size}"
        return None
    if sample.label == NO_LABEL:
        return f"{where} has no label (.cls), but the recipe's stages are class-conditional ({size} classes)"
    if not 0 <= sample.label < size:
        return f"{where} has label {sample.label}, out of range for {size} classes"
    return None


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


def _vector_size(side: SideInfo | None) -> int:
    """``K`` for a recipe conditioned on vectors of size ``K``, else 0."""
    return side.size if side is not None and side.kind == "vectors" else 0


def _batch(samples: list[Sample], size: int, shape, vector_size: int) -> dict:
    images = np.zeros((size, *shape), np.uint8)
    labels = np.full(size, NO_LABEL, np.int64)
    vectors = np.zeros((size, vector_size), np.float32)
    valid = np.zeros(size, bool)
    for index, sample in enumerate(samples):
        images[index], labels[index], valid[index] = sample.image, sample.label, True
        if vector_size:
            vectors[index] = sample.vector
    return {"images": images, "labels": labels, "vectors": vectors, "valid": valid,
            "keys": [sample.key for sample in samples]}


class TrainingStream(IterableDataset):
    """The worker side of ``TrainingBatches``: endless sub-batches of this rank's streams, each
    with its stream's cursor. Worker ``j`` of ``w`` serves every ``w``-th of them, round robin."""

    def __init__(self, shards: list[Shard], sub_batch: int, shape, seed: list[int], streams: list[int],
                 cursors: dict[int, tuple[int, int]], side: SideInfo | None = None) -> None:
        self.shards = [s for s in shards if s.size != 0]
        if not self.shards:
            raise DataError(f"data: all {len(shards)} shards are empty")
        self.sub_batch, self.shape, self.seed = sub_batch, tuple(shape), seed
        self.streams, self.cursors, self.side = streams, cursors, side
        self.vector_size = _vector_size(side)
        self.known = sum(s.size or 0 for s in self.shards)

    def __iter__(self) -> Iterator[dict]:
        worker, workers = _worker()
        mine = [self._stream(k) for k in self.streams[worker::workers]]
        while True:
            for stream in mine:
                yield next(stream)

    def _stream(self, stream: int) -> Iterator[dict]:
        round_, start = self.cursors.get(stream, (0, 0))
        samples, skipped, failures = [], [], 0
        while True:
            generator = np.random.default_rng([*self.seed, stream, round_])
            shard = self.shards[generator.integers(len(self.shards))]
            records = shard.records()
            if not records:
                failures += 1
                if failures > max(self.known, 1000):
                    yield {"error": f"data: no readable sample in {failures} tries (last: {shard.name} is empty)",
                           "skipped": skipped}
                    return
            order = generator.permutation(len(records))
            uniforms = generator.random(len(records))
            for position in range(start, len(records)):
                record = records[order[position]]
                decoded = record if isinstance(record, Skip) else shard.decode(record, self.shape)
                if isinstance(decoded, Skip):
                    skipped.append(decoded)
                    failures += 1
                    if failures > max(self.known, 1000):
                        yield {"error": f"data: no readable sample in {failures} tries (last: {decoded})",
                               "skipped": skipped}
                        return
                    continue
                problem = side_problem(decoded, shard, self.side)
                if problem:
                    yield {"error": problem, "skipped": skipped}
                    return
                failures = 0
                samples.append((decoded, uniforms[position]))
                if len(samples) == self.sub_batch:
                    yield {**_batch([d for d, _ in samples], self.sub_batch, self.shape, self.vector_size),
                           "uniform": np.array([u for _, u in samples]), "stream": stream,
                           "cursor": (round_, position + 1), "skipped": skipped}
                    samples, skipped = [], []
            round_, start = round_ + 1, 0


class ExactPass(IterableDataset):
    """The worker side of ``exact_batches``."""

    def __init__(self, shards: list[Shard], batch_size: int, shape, rank: int, world: int,
                 side: SideInfo | None = None) -> None:
        self.shards, self.batch_size, self.shape = shards, batch_size, tuple(shape)
        self.rank, self.world, self.side = rank, world, side
        self.vector_size = _vector_size(side)

    def __iter__(self) -> Iterator[dict]:
        worker, workers = _worker()
        me, everyone = self.rank * workers + worker, self.world * workers
        samples, skipped = [], []
        for index, shard in enumerate(self.shards):
            if index % everyone != me:
                continue
            for record in shard.records():
                decoded = record if isinstance(record, Skip) else shard.decode(record, self.shape)
                if isinstance(decoded, Skip):
                    skipped.append(decoded)
                    continue
                problem = side_problem(decoded, shard, self.side)
                if problem:
                    yield {"error": problem, "skipped": skipped}
                    return
                samples.append(decoded)
                if len(samples) == self.batch_size:
                    yield {**_batch(samples, self.batch_size, self.shape, self.vector_size), "skipped": skipped}
                    samples, skipped = [], []
        if samples or skipped:
            yield {**_batch(samples, self.batch_size, self.shape, self.vector_size), "skipped": skipped}


class SkipLog:
    """Distinct damaged samples seen so far; warns on each new one, stops above ``limit``."""

    def __init__(self, limit: int, seen: list[list[str]] = ()) -> None:
        self.limit = limit
        self.seen: dict[tuple[str, str], str] = {(shard, key): reason for shard, key, reason in seen}

    def add(self, skips: list[Skip]) -> None:
        for skip in skips:
            if (skip.shard, skip.key) in self.seen:
                continue
            self.seen[(skip.shard, skip.key)] = skip.reason
            warnings.warn(f"skipped {skip} ({len(self.seen)} damaged so far, at most {self.limit} allowed)",
                          stacklevel=3)
            if len(self.seen) > self.limit:
                raise DataError(f"data: {len(self.seen)} damaged samples, more than data.max_bad_samples = "
                                f"{self.limit} (latest: {skip}); repair or re-shard the data")

    def records(self) -> list[list[str]]:
        return [[shard, key, reason] for (shard, key), reason in self.seen.items()]


def _as_is(batch: dict) -> dict:
    return batch


def _loader(dataset: IterableDataset, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_as_is)


@attrs.frozen
class TrainingBatch:
    """One rank's share of a training step: ``images [B, C, H, W]`` uint8, ``labels [B]`` int64
    (-1: none), ``vectors [B, K]`` float32 (K = 0 without vector side information) and
    ``uniform [B]`` float64 in [0, 1), a per-sample draw that picks its target slice."""

    images: torch.Tensor
    labels: torch.Tensor
    vectors: torch.Tensor
    uniform: torch.Tensor

    def side(self, kind: str | None) -> torch.Tensor | None:
        """The side information a recipe takes: ``labels``, ``vectors`` or None."""
        return {"labels": self.labels, "vectors": self.vectors}.get(kind)


class TrainingBatches:
    """This rank's training batches, forever.

    Every global batch of ``batch_size`` is made of ``streams`` equal parts, one from each of
    ``streams`` independent sample streams; rank ``r`` of ``world`` reads streams
    ``r * streams / world`` onwards. So a run's data (and each sample's target slice) does not
    depend on how many processes share it: one process reading all streams sees exactly what
    the ranks see together. ``state()`` (plain lists and ints) resumes exactly, also with another
    number of ranks or workers, as long as ``streams`` is the same. With ``side`` (the recipe's
    ``("labels", classes)`` or ``("vectors", K)``), every sample must carry it (``DataError``
    otherwise).
    """

    def __init__(self, shards: list[Shard], batch_size: int, shape, seed: int, rank: int = 0, world: int = 1,
                 streams: int = 1, workers: int = 0, max_bad: int = 10, state: dict | None = None,
                 side: SideInfo | None = None) -> None:
        if batch_size % streams or streams % world or (streams // world) % max(workers, 1):
            raise DataError(f"data.streams: {streams} streams must divide the batch of {batch_size}, and split "
                            f"evenly over {world} rank(s) and {max(workers, 1)} loader worker(s) per rank")
        state = state or {}
        if state and state["streams"] != streams:
            warnings.warn(f"data position not restored: saved with {state['streams']} streams, now {streams} "
                          "(data.streams); the streams go on with fresh rounds", stacklevel=2)
            state = {"batches": state["batches"], "skipped": state["skipped"], "generation": state["batches"]}
        self.streams, self.world = streams, world
        self.generation = state.get("generation", 0)
        self.cursors = {int(k): tuple(c) for k, c in state.get("cursors", {}).items()}
        self.batches = state.get("batches", 0)
        self.skips = SkipLog(max_bad, state.get("skipped", []))
        self.mine = list(range(rank * streams // world, (rank + 1) * streams // world))
        stream = TrainingStream(shards, batch_size // streams, shape, [seed, self.generation], self.mine,
                                {k: c for k, c in self.cursors.items() if k in self.mine}, side)
        self._iterator = iter(_loader(stream, workers))

    def __iter__(self) -> TrainingBatches:
        return self

    def __next__(self) -> TrainingBatch:
        parts = []
        for expected in self.mine:
            item = next(self._iterator)
            self.skips.add(item["skipped"])
            if "error" in item:
                raise DataError(item["error"])
            assert item["stream"] == expected, "loader workers out of step"
            self.cursors[expected] = tuple(item["cursor"])
            parts.append(item)
        self.batches += 1
        return TrainingBatch(*(torch.as_tensor(np.concatenate([p[key] for p in parts]))
                               for key in ("images", "labels", "vectors", "uniform")))

    def state(self) -> dict:
        """Cursors of this rank's streams; ranks' states merge with ``merge_states``."""
        return {"streams": self.streams, "generation": self.generation, "batches": self.batches,
                "cursors": {str(k): list(c) for k, c in self.cursors.items() if k in self.mine},
                "skipped": self.skips.records()}


def merge_states(states: list[dict]) -> dict:
    """One state from every rank's ``TrainingBatches.state()``: all streams' cursors."""
    merged = dict(states[0])
    merged["cursors"] = {k: c for state in states for k, c in state["cursors"].items()}
    merged["skipped"] = [list(s) for s in sorted({tuple(s) for state in states for s in state["skipped"]})]
    return merged


def exact_batches(shards: list[Shard], batch_size: int, shape, rank: int = 0, world: int = 1,
                  workers: int = 0, max_bad: int = 10, skips: SkipLog | None = None,
                  side: SideInfo | None = None) -> Iterator[dict]:
    """One pass over this rank's share of ``shards``: dicts with ``images`` ``[B, C, H, W]`` uint8,
    ``labels`` ``[B]`` int64, ``vectors`` ``[B, K]`` float32, ``valid`` ``[B]`` bool (padding is
    invalid), ``keys`` and ``skipped`` (how many damaged samples were passed over since the
    previous batch, each also warned about by ``skips``). With ``side``, every sample must carry
    it (``DataError`` otherwise)."""
    skips = skips or SkipLog(max_bad)
    for item in _loader(ExactPass(shards, batch_size, shape, rank, world, side), workers):
        skips.add(item["skipped"])
        if "error" in item:
            raise DataError(item["error"])
        yield {"images": torch.as_tensor(item["images"]), "labels": torch.as_tensor(item["labels"]),
               "vectors": torch.as_tensor(item["vectors"]),
               "valid": torch.as_tensor(item["valid"]), "keys": item["keys"], "skipped": len(item["skipped"])}


def tar_shards(urls: list[str], sizes: dict[str, int] | None = None) -> list[TarShard]:
    """``TarShard``s for local paths; ``sizes`` (from a manifest) by file name."""
    return [TarShard(url, (sizes or {}).get(Path(url).name)) for url in urls]
