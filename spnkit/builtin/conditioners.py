"""Conditioners for class-conditional models (Gated PixelCNN's ``p(x | h)``, van den Oord et
al. 2016c): a learned embedding of class labels, and a linear map of given vectors."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from spnkit.hookspecs import hookimpl
from spnkit.interfaces import Conditioner

_positive = attrs.validators.ge(1)


@attrs.frozen
class ClassEmbeddingOptions:
    """``classes`` labels ``0 .. classes-1`` embedded in ``channels`` units; ``null_class``
    adds a row for "no label" (label ``-1``), for classifier-free guidance."""

    classes: int = attrs.field(validator=_positive)
    channels: int = attrs.field(default=32, validator=_positive)
    null_class: bool = True


class ClassEmbedding(Conditioner):
    """A learned vector per class label (and one for "no label", -1)."""

    Options = ClassEmbeddingOptions

    def __init__(self, options: ClassEmbeddingOptions) -> None:
        super().__init__(options)
        self.embedding = nn.Embedding(options.classes + options.null_class, options.channels)

    @property
    def out_channels(self) -> int:
        return self.options.channels

    def check(self, side: torch.Tensor, batch: int) -> None:
        super().check(side, batch)
        classes = self.options.classes
        lowest = -1 if self.options.null_class else 0
        bad = (side < lowest) | (side >= classes)
        if bad.any():
            label = int(side[bad][0])
            hint = " (null_class = false: there is no 'no label' row)" if label == -1 else ""
            raise ValueError(f"label {label} is out of range for {classes} classes{hint}")

    def forward(self, side: torch.Tensor) -> torch.Tensor:
        """labels ``[B]`` int64 (``-1``: no label) -> ``[B, channels]``."""
        return self.embedding(torch.where(side < 0, self.options.classes, side))


@attrs.frozen
class VectorOptions:
    """Vectors of ``size`` floats mapped to ``channels`` units."""

    size: int = attrs.field(validator=_positive)
    channels: int = attrs.field(default=32, validator=_positive)


class Vector(Conditioner):
    """A linear map of a given side-information vector (e.g. an embedding of a caption)."""

    Options = VectorOptions
    takes = "vectors"
    size_option = "size"

    def __init__(self, options: VectorOptions) -> None:
        super().__init__(options)
        self.linear = nn.Linear(options.size, options.channels)

    @property
    def out_channels(self) -> int:
        return self.options.channels

    def forward(self, side: torch.Tensor) -> torch.Tensor:
        """vectors ``[B, size]`` float -> ``[B, channels]``."""
        return self.linear(side.to(self.linear.weight.dtype))


@hookimpl
def spnkit_register_conditioners(register):
    register("class_embedding", ClassEmbedding)
    register("vector", Vector)
