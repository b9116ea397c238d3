"""PixelRNN slice decoders: a 7x7 mask-A convolution, PixelRNN layers with mask B, and a
two-layer 1x1 masked head with a softmax over the levels of each subpixel."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from spnkit.core.interfaces import SliceDecoder, SliceSpec
from spnkit.core.validators import odd, positive
from spnkit.nn.masked_conv import MaskedConv2d
from spnkit_pixelrnn.lstm import DiagonalBiLSTM, RowLSTM


@attrs.frozen
class RowLSTMOptions:
    layers: int = attrs.field(default=2, validator=positive,
                            metadata={"doc": "Row LSTM layers after the 7x7 mask-A convolution"})
    features: int = attrs.field(default=32, validator=positive,
                              metadata={"doc": "features of each layer (at least the image channels)"})
    kernel: int = attrs.field(default=3, validator=odd,
                            metadata={"doc": "width k of the 1 x k input-to-state and state-to-state convolutions"})


@attrs.frozen
class DiagonalBiLSTMOptions:
    layers: int = attrs.field(default=2, validator=positive,
                            metadata={"doc": "Diagonal BiLSTM layers after the 7x7 mask-A convolution"})
    features: int = attrs.field(default=32, validator=positive, metadata={"doc": "features of each layer"})


class _PixelRNN(SliceDecoder):
    def __init__(self, options, spec: SliceSpec, layers: list[nn.Module]) -> None:
        super().__init__(options, spec)
        c, levels, features = spec.channels, spec.levels, layers[0].features
        if features < c:
            raise ValueError(f"features ({features}) must be at least the image channels ({c})")
        self.first = MaskedConv2d(c * levels, features, (7, 7), c, "A")
        self.layers = nn.ModuleList(layers)
        self.head = nn.ModuleList([
            MaskedConv2d(features, features, (1, 1), c, "B"),
            MaskedConv2d(features, c * levels, (1, 1), c, "B"),
        ])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, L, C, h, w]`` one-hot -> logits ``[B, L, C, h, w]``."""
        b, levels, c, height, width = x.shape
        pixels = x.transpose(1, 2).reshape(b, c * levels, height, width)
        h = self.first(pixels)
        for layer in self.layers:
            h = layer(h, context, pixels)
        for conv in self.head:
            h = conv(torch.relu(h))
        return h.view(b, c, levels, height, width).transpose(1, 2)


class RowLSTMDecoder(_PixelRNN):
    """PixelRNN with Row LSTM layers (van den Oord et al. 2016b): triangular receptive field."""

    Options = RowLSTMOptions

    def __init__(self, options: RowLSTMOptions, spec: SliceSpec) -> None:
        layers = [RowLSTM(options.features, spec.channels, spec.context_channels, options.kernel)
                  for _ in range(options.layers)]
        super().__init__(options, spec, layers)


class DiagonalBiLSTMDecoder(_PixelRNN):
    """PixelRNN with Diagonal BiLSTM layers (van den Oord et al. 2016b): the whole context."""

    Options = DiagonalBiLSTMOptions

    def __init__(self, options: DiagonalBiLSTMOptions, spec: SliceSpec) -> None:
        layers = [DiagonalBiLSTM(options.features, spec.channels, spec.context_channels, spec.channels * spec.levels)
                  for _ in range(options.layers)]
        super().__init__(options, spec, layers)
