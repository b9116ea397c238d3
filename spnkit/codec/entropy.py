"""Entropy coding with ``constriction``: the one rule that turns logits into the tables both
sides code with, and one range-coded stream per image.

The rule is ``probabilities``: float64 ``exp(logits - max)`` per row, computed by the same call on
arrays of the same shape on both sides, then quantized by constriction's ``Categorical``
(``perfect=False``: a fixed function of those float64 values in constriction's compiled code,
the same for one row or many). A stream is constriction's ``uint32`` words, stored
little-endian.
"""

from __future__ import annotations

import constriction
import numpy as np
import torch

MODEL = constriction.stream.model.Categorical(perfect=False)


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """``logits [K, L]`` float (one subpixel of each of K images) -> ``[K, L]`` float64
    unnormalized probabilities (constriction normalizes and quantizes them)."""
    x = logits.detach().to("cpu", torch.float64).numpy()
    return np.exp(x - x.max(axis=1, keepdims=True))


def information(symbols: np.ndarray, tables: np.ndarray) -> float:
    """Bits of ``symbols [...]`` under their ``tables [..., L]`` (normalized, before quantization):
    what an ideal coder would spend on them."""
    chosen = np.take_along_axis(tables, symbols[..., None], axis=-1)[..., 0]
    return float(-np.log2(chosen / tables.sum(axis=-1)).sum())


class StreamEncoders:
    """One range encoder per image of a chunk (rows ``0..count-1``; padding rows have none)."""

    def __init__(self, count: int) -> None:
        self.encoders = [constriction.stream.queue.RangeEncoder() for _ in range(count)]

    def encode(self, symbols: np.ndarray, tables: np.ndarray) -> None:
        """Append ``symbols [n, K]`` with their ``tables [n, K, L]`` (rows in coding order) to each
        image's stream."""
        for row, encoder in enumerate(self.encoders):
            encoder.encode(symbols[:, row].astype(np.int32), MODEL, np.ascontiguousarray(tables[:, row]))

    def streams(self) -> list[bytes]:
        return [encoder.get_compressed().astype("<u4").tobytes() for encoder in self.encoders]


class StreamDecoders:
    """Range decoders for the chosen rows of a chunk: ``{row: stream bytes}``."""

    def __init__(self, streams: dict[int, bytes]) -> None:
        self.decoders = {row: constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
                         for row, data in streams.items()}

    def decode(self, tables: np.ndarray) -> torch.Tensor:
        """The next symbol of each chosen row from ``tables [K, L]``: ``[K]`` long (0 elsewhere)."""
        values = torch.zeros(tables.shape[0], dtype=torch.long)
        for row, decoder in self.decoders.items():
            values[row] = int(decoder.decode(MODEL, tables[row : row + 1])[0])
        return values
