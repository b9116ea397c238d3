"""Conditioners for conditional models (Gated PixelCNN's ``p(x | h)``, van den Oord et al.
2016c): a learned embedding of class labels, a linear map of given vectors, and a
convolutional encoder of the stage's own input image (the PixelCNN Auto-Encoder).

All three start at ``h = 0``: random label embeddings at initialisation are per-class noise in every
context, and on Fashion-MNIST they left the conditional model behind the unconditional one for
the first hundreds of steps; from zero, the label's effect grows as it is learned."""

from __future__ import annotations

import math

import attrs
import torch
from torch import nn

from spnkit.core.hookspecs import hookimpl
from spnkit.core.interfaces import Conditioner, InputSpec
from spnkit.core.validators import in_range, rule, up_to


@rule("needs null_class = true when > 0")
def _needs_null_class(options: ClassEmbeddingOptions, attribute: attrs.Attribute, value: float) -> None:
    """``drop_labels`` > 0 drops labels to the "no label" row, so it needs that row."""
    if value and not options.null_class:
        raise ValueError(f"needs null_class = true (a 'no label' row to drop to), got {value!r}")


@attrs.frozen
class ClassEmbeddingOptions:
    """``classes`` labels ``0 .. classes-1`` embedded in ``channels`` units; ``null_class``
    adds a row for "no label" (label ``-1``), for classifier-free use. In training, each
    label is replaced by "no label" with probability ``drop_labels``, so that row is learned
    and one model gives both ``p(x | label)`` and ``p(x)``."""

    classes: int = attrs.field(validator=up_to(2**20), metadata={"doc": "labels 0 .. classes-1"})
    channels: int = attrs.field(default=32, validator=up_to(16384), metadata={"doc": "units of each label's embedding"})
    null_class: bool = attrs.field(default=True,
                                 metadata={"doc": "add a row for 'no label' (label -1), for classifier-free use"})
    drop_labels: float = attrs.field(default=0.0, validator=[in_range(0.0, 1.0, closed_high=True), _needs_null_class],
                                   metadata={"doc": "training: the chance a label is replaced by 'no label', so one model gives p(x | label) and p(x)"})


class ClassEmbedding(Conditioner):
    """A learned vector per class label (and one for "no label", -1)."""

    Options = ClassEmbeddingOptions

    def __init__(self, options: ClassEmbeddingOptions, spec: InputSpec | None = None) -> None:
        super().__init__(options, spec)
        self.embedding = nn.Embedding(options.classes + options.null_class, options.channels)
        nn.init.zeros_(self.embedding.weight)  # see the module docstring

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
        """labels ``[B]`` int64 (``-1``: no label) -> ``[B, channels]``; in training mode a
        ``drop_labels`` share of them, drawn from torch's generator, count as "no label"."""
        null = side < 0
        if self.training and self.options.drop_labels:
            null = null | (torch.rand(side.shape, device=side.device) < self.options.drop_labels)
        return self.embedding(torch.where(null, self.options.classes, side))


@attrs.frozen
class VectorOptions:
    """Vectors of ``size`` floats mapped to ``channels`` units."""

    size: int = attrs.field(validator=up_to(16384), metadata={"doc": "floats in each side-information vector"})
    channels: int = attrs.field(default=32, validator=up_to(16384), metadata={"doc": "units the vector is mapped to"})


class Vector(Conditioner):
    """A linear map of a given side-information vector (e.g. an embedding of a caption)."""

    Options = VectorOptions
    takes = "vectors"
    size_option = "size"

    def __init__(self, options: VectorOptions, spec: InputSpec | None = None) -> None:
        super().__init__(options, spec)
        self.linear = nn.Linear(options.size, options.channels)
        nn.init.zeros_(self.linear.weight)  # see the module docstring
        nn.init.zeros_(self.linear.bias)

    @property
    def out_channels(self) -> int:
        return self.options.channels

    def forward(self, side: torch.Tensor) -> torch.Tensor:
        """vectors ``[B, size]`` float -> ``[B, channels]``."""
        return self.linear(side.to(self.linear.weight.dtype))


@attrs.frozen
class ImageEncoderOptions:
    """A convolutional encoder of the stage's input image to a code of ``bottleneck`` floats:
    ``layers`` 3x3 convolutions of stride 2, ``channels`` wide, ReLU, then a layer norm, a linear
    map and tanh."""

    bottleneck: int = attrs.field(default=8, validator=up_to(16384),
                                  metadata={"doc": "m: floats in the code, the auto-encoder's bottleneck"})
    channels: int = attrs.field(default=32, validator=up_to(4096), metadata={"doc": "features of each convolution"})
    layers: int = attrs.field(default=3, validator=up_to(16),
                              metadata={"doc": "3x3 convolutions of stride 2, each halving the image (rounding up)"})


class ImageEncoder(Conditioner):
    """The PixelCNN Auto-Encoder's encoder: the stage's input image to a code of m floats.

    After van den Oord et al. 2016c, section 3.4: the code ``h`` is trained end to end with the
    stage's loss, so the decoder models ``p(x | h(x))``. The code is ``h`` itself
    (``out_channels = m``), ``tanh(linear(features) / sqrt(F))`` of the convolutions' ``F``
    features, normalised per image. Each part was needed on Fashion-MNIST at lr 1e-3
    (``bench/autoencoder.py``): unbounded, a code of 32 floats made gradient norms spike into
    the hundreds and training stall; drawn at random at first, the code was noise in every
    layer and the auto-encoders fell behind the unconditional model, so the linear map starts
    at zero (``h = 0``, as the other conditioners); and Adam moves each of its ``F`` weights by
    about the learning rate per step whatever the gradient's size, so unscaled the code moved
    by up to ``lr * F`` per step and saturated tanh (every code at +-1, the encoder's gradient
    gone) within 25 steps. The ``1 / sqrt(F)`` (an equalised learning rate, Karras et al. 2018)
    keeps it within tanh's working range."""

    Options = ImageEncoderOptions
    takes = "image"
    size_option = "bottleneck"

    def __init__(self, options: ImageEncoderOptions, spec: InputSpec | None = None) -> None:
        super().__init__(options, spec)
        if spec is None:
            raise ValueError("image_encoder needs the stage's input shape (InputSpec)")
        convs, features, height, width = [], spec.channels, spec.height, spec.width
        for _ in range(options.layers):
            convs += [nn.Conv2d(features, options.channels, 3, stride=2, padding=1), nn.ReLU()]
            features, height, width = options.channels, math.ceil(height / 2), math.ceil(width / 2)
        self.convs = nn.Sequential(*convs)
        self.norm = nn.LayerNorm(features * height * width, elementwise_affine=False)
        self.linear = nn.Linear(features * height * width, options.bottleneck)
        nn.init.zeros_(self.linear.weight)  # h = 0 at first, as the other conditioners'
        nn.init.zeros_(self.linear.bias)
        self.scale = 1 / math.sqrt(self.linear.in_features)  # see the class docstring

    @property
    def out_channels(self) -> int:
        return self.options.bottleneck

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """levels ``[B, C, H, W]`` long -> code ``[B, bottleneck]`` in (-1, 1); levels scaled to [-1, 1]."""
        x = image.to(self.linear.weight.dtype) * (2 / max(self.spec.levels - 1, 1)) - 1
        features = self.norm(self.convs(x).flatten(1))  # [B, F, H', W'] -> [B, F*H'*W'], per image 0 mean, 1 variance
        return torch.tanh(self.linear(features) * self.scale)  # [B, m]

    def forward(self, side: torch.Tensor) -> torch.Tensor:
        """codes ``[B, bottleneck]`` float -> ``h``, the codes themselves."""
        return side.to(self.linear.weight.dtype)


@hookimpl
def spnkit_register_conditioners(register):
    register("class_embedding", ClassEmbedding)
    register("vector", Vector)
    register("image_encoder", ImageEncoder)
