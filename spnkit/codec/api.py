"""``compress`` and ``decompress``: images to bytes and back with a trained pipeline.

Why the decoder sees the encoder's probabilities bit for bit: both run ``coding.walk``, the
decoder's own incremental path subpixel by subpixel (the encoder teacher-forced with the true
values), on chunks of ``chunk`` images (the file records it; the last chunk is padded with
blank images), with image ``i`` always at row ``i % chunk``, on the CPU with one torch thread,
and turn logits into tables by one rule (``entropy.probabilities``). Rows of a batch do not mix
in the model, so decoding some images of a chunk (blank rows for the others) gives the same
numbers. The CRC-32 of every image's levels is checked after decoding: a machine or torch
build whose arithmetic differs from the encoder's gives an error, never a silently wrong image.
"""

from __future__ import annotations

import contextlib
import itertools
import platform
import zlib
from collections.abc import Iterator
from typing import Callable

import attrs
import numpy as np
import torch

from spnkit.codec.coding import Step, walk
from spnkit.codec.entropy import StreamDecoders, StreamEncoders, information
from spnkit.codec.identity import fingerprint
from spnkit.codec import container
from spnkit.codec.container import CodecError, Container, unpack
from spnkit.core.system import AutoregressiveStage, Pipeline

Progress = Callable[[int], None]
"""Called with the number of images just finished."""


@attrs.frozen
class Encoded:
    """Coded images before they are packed into a file."""

    shape: tuple[int, int, int]  # (C, H, W)
    bits: int  # levels are in [0, 2**bits)
    chunk: int
    streams: list[bytes]  # one per image
    checks: list[int]  # CRC-32 of each image's levels
    stage_bits: dict[str, float]  # each stage's information under the coded tables, over all images (the
    # streams hold that plus the range coder's overhead: quantization and each stream's end)


def encode(pipeline: Pipeline, images: torch.Tensor, *, chunk: int = 16, progress: Progress | None = None) -> Encoded:
    """Code ``images [N, C, H, W]``, integer levels in ``[0, 2**bits)`` (``bits``: the quantizer's
    ``in_bits``), in chunks of ``chunk`` images (decoding one image costs a chunk's work)."""
    shape, bits = _check_pipeline(pipeline), pipeline.quantizer.in_bits
    if images.ndim != 4 or tuple(images.shape[1:]) != shape or not len(images):
        raise ValueError(f"images: expected [N > 0, {', '.join(map(str, shape))}], got {list(images.shape)}")
    if images.is_floating_point() or images.min() < 0 or images.max() >= 2**bits:
        raise ValueError(f"images: expected integer levels in [0, {2**bits}), got {images.dtype} "
                         f"in [{images.min()}, {images.max()}]")
    if not 1 <= chunk <= 65535:
        raise ValueError(f"chunk: must be in [1, 65535], got {chunk}")
    images = images.long().cpu()
    streams, stage_bits = [], dict.fromkeys(pipeline.stages, 0.0)
    with _coding(pipeline):
        for start in range(0, len(images), chunk):
            real = images[start : start + chunk]
            padded = torch.cat([real, real.new_zeros(chunk - len(real), *shape)])
            streams += _Recorder(pipeline, padded, len(real), stage_bits).streams()
            if progress is not None:
                progress(len(real))
    return Encoded(shape, bits, chunk, streams, [_crc(image) for image in images], stage_bits)


def pack(pipeline: Pipeline, coded: Encoded, *, recipe: str = "", about: dict | None = None) -> bytes:
    """The file's bytes for images ``coded`` with ``pipeline``. ``recipe``: the text that built the
    pipeline (part of the model's fingerprint); ``about``: JSON-compatible data the file keeps
    (names, ...)."""
    return container.pack(Container(fingerprint(pipeline, recipe), coded.shape, coded.bits, coded.chunk,
                                 {**(about or {}), "coder": _coder()}, coded.checks, coded.streams))


def compress(pipeline: Pipeline, images: torch.Tensor, *, chunk: int = 16, recipe: str = "",
             about: dict | None = None, progress: Progress | None = None) -> bytes:
    """``encode`` then ``pack``: ``images [N, C, H, W]`` levels to the file's bytes."""
    return pack(pipeline, encode(pipeline, images, chunk=chunk, progress=progress), recipe=recipe, about=about)


def read(data: bytes, name: str = "the file") -> Container:
    """The verified contents of a compressed file (``CodecError`` if it is damaged)."""
    return unpack(data, name)


def decompress(pipeline: Pipeline, data: bytes, *, indices: list[int] | None = None, recipe: str = "",
               progress: Progress | None = None, name: str = "the file") -> torch.Tensor:
    """The images of a compressed file (or those at ``indices``, each decoded from its own
    stream), ``[n, C, H, W]`` long levels. ``recipe`` as given to ``compress``; ``name`` names
    the file in errors. ``CodecError`` for a damaged file, another model's, or an image that
    does not decode to what was coded."""
    contents = unpack(data, name)
    if contents.model != fingerprint(pipeline, recipe):
        raise CodecError(f"{name} was compressed with another model (its fingerprint is "
                         f"{contents.model.hex()[:16]}..., this model's differs): use the run it was made with")
    wanted = list(range(contents.count)) if indices is None else list(indices)
    outside = [i for i in wanted if not 0 <= i < contents.count]
    if outside:
        raise ValueError(f"indices: {outside[:3]} outside [0, {contents.count})")
    decoded = {}
    with _coding(pipeline):
        for number, rows in itertools.groupby(sorted(set(wanted)), key=lambda i: i // contents.chunk):
            rows = list(rows)
            decoded.update(_decode_chunk(pipeline, contents, number, rows, name))
            if progress is not None:
                progress(len(rows))
    return torch.stack([decoded[i] for i in wanted]) if wanted else torch.zeros(0, *contents.shape, dtype=torch.long)


class _Recorder:
    """The encoder's side of the walk over one chunk: answers with the true values and codes the
    recorded tables into the streams slice by slice."""

    def __init__(self, pipeline: Pipeline, images: torch.Tensor, count: int, stage_bits: dict[str, float]) -> None:
        """``images [chunk, C, H, W]`` long, the first ``count`` real (the rest padding);
        ``stage_bits``: each stage's bits so far, added to."""
        self.pipeline, self.images, self.count, self.stage_bits = pipeline, images, count, stage_bits
        planes = pipeline.quantizer.encode(images)
        self.truth = {name: stage.ordering.to_slices(pipeline.stage_inputs(name, planes)[0])
                      for name, stage in pipeline.stages.items()}  # [chunk, N, C, h, w] per stage
        self.encoders = StreamEncoders(count)
        self.at, self.tables, self.values = None, [], []  # the slice being recorded

    def streams(self) -> list[bytes]:
        """Walk the chunk; the real images' streams."""
        walked = walk(self.pipeline, tuple(self.images.shape[1:]), len(self.images), self.choose)
        self.flush()
        if not torch.equal(walked, self.images):
            raise ValueError("the pipeline's stages do not model every subpixel: it cannot code images")
        return self.encoders.streams()

    def choose(self, step: Step, tables: np.ndarray) -> torch.Tensor:
        if (step.stage, step.slice) != self.at:
            self.flush()
            self.at = (step.stage, step.slice)
        value = self.truth[step.stage][:, step.slice, step.channel, step.row, step.col]
        self.tables.append(tables[: self.count])
        self.values.append(value[: self.count].numpy())
        return value

    def flush(self) -> None:
        if self.values:
            values, tables = np.stack(self.values), np.stack(self.tables)
            self.encoders.encode(values, tables)
            self.stage_bits[self.at[0]] += information(values, tables)
        self.tables, self.values = [], []


def _decode_chunk(pipeline: Pipeline, contents: Container, number: int, rows: list[int],
                  name: str) -> dict[int, torch.Tensor]:
    """Images ``rows`` (indices in the file) of chunk ``number``, each checked against its CRC."""
    chunk = contents.chunk
    decoders = StreamDecoders({i - number * chunk: contents.streams[i] for i in rows})
    try:
        images = walk(pipeline, contents.shape, chunk, lambda step, tables: decoders.decode(tables))
    except (ValueError, RuntimeError, AssertionError) as exc:  # constriction on data it cannot decode
        raise _mismatch(contents, name, rows[0], f"decoding failed: {exc}") from None
    decoded = {i: images[i - number * chunk].cpu() for i in rows}
    for i, image in decoded.items():
        if _crc(image) != contents.checks[i]:
            raise _mismatch(contents, name, i, "its CRC-32 differs")
    return decoded


def _mismatch(contents: Container, name: str, index: int, why: str) -> CodecError:
    names = contents.about.get("names")
    which = f"image {index}" + (f" ({names[index]})" if isinstance(names, list) and index < len(names) else "")
    return CodecError(f"{name}: {which} does not decode to what was coded ({why}): this machine computes the "
                      f"model's probabilities differently (coded with {_describe(contents.about.get('coder'))}; "
                      f"this is {_describe(_coder())}); decompress where it was compressed")


def _check_pipeline(pipeline: Pipeline) -> tuple[int, int, int]:
    """The image shape ``(C, H, W)`` the pipeline codes; ``ValueError`` for one it cannot."""
    for name, stage in pipeline.stages.items():
        if not isinstance(stage, AutoregressiveStage) or stage.conditioner is not None:
            raise ValueError(f"stage {name!r}: the codec codes unconditional AutoregressiveStages only")
    if any(p.device.type != "cpu" for p in pipeline.parameters()):
        raise ValueError("the codec runs on the CPU: move the pipeline there (pipeline.cpu())")
    if pipeline.quantizer.in_bits > 16:
        raise ValueError(f"the codec codes images of at most 16 bits, not {pipeline.quantizer.in_bits}")
    full = [stage for name, stage in pipeline.stages.items() if pipeline.placements[name][1] == 1]
    if not full:
        raise ValueError("no stage models the whole image (every placement is downsampled)")
    return full[0].channels, full[0].height, full[0].width


@contextlib.contextmanager
def _coding(pipeline: Pipeline) -> Iterator[None]:
    """Evaluation mode and one torch thread for the block (both restored after)."""
    training, threads = pipeline.training, torch.get_num_threads()
    pipeline.eval()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        pipeline.train(training)


def _crc(image: torch.Tensor) -> int:
    """CRC-32 of ``[C, H, W]`` levels as little-endian uint16."""
    return zlib.crc32(image.numpy().astype("<u2").tobytes())


def _coder() -> dict:
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine()}


def _describe(coder: object) -> str:
    if not isinstance(coder, dict):
        return "an unknown machine"
    return f"torch {coder.get('torch')} on {coder.get('machine')} {coder.get('cpu')}"
