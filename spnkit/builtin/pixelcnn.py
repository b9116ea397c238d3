"""PixelCNN (van den Oord et al. 2016b) and Gated PixelCNN (van den Oord et al. 2016c) decoders.

The Gated PixelCNN itself lives in ``spnkit.nn.gated`` (the hybrid decoder reuses it); this
module registers both. Both read the one-hot slice as ``[B, C*L, h, w]`` in channel-major order, so input feature
``c*L + l`` belongs to image channel ``c``, and end in a masked 1x1 head whose logits for
channel ``c`` come from channel-``c`` features only.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

from spnkit.core.hookspecs import hookimpl
from spnkit.core.interfaces import SliceDecoder, SliceSpec
from spnkit.core.sampling import PixelInputs, SliceCache
from spnkit.core.validators import up_to
from spnkit.nn.gated import GatedPixelCNN
from spnkit.nn.masked_conv import (
    Conv1x1,
    MaskedConv2d,
    MaskedHead,
    OneHotTaps,
    centre_tap,
    check_channel_groups,
    features_as_logits,
    left_taps,
    level_windows,
    levels_left,
    pixels_as_features,
    rows_above,
)


# ----------------------------------------------------------------------------- PixelCNN


@attrs.frozen
class PixelCNNOptions:
    """``layers`` residual 3x3 mask-B layers of ``channels`` features after the 7x7 mask-A
    input layer; ``head_channels`` hidden features in the 1x1 output head."""

    layers: int = attrs.field(default=6, validator=up_to(256),
                            metadata={"doc": "residual 3x3 mask-B layers after the 7x7 mask-A input layer"})
    channels: int = attrs.field(default=48, validator=up_to(16384), metadata={"doc": "features of each layer"})
    head_channels: int = attrs.field(default=96, validator=up_to(16384),
                                   metadata={"doc": "hidden features of the 1x1 output head"})


class PixelCNN(SliceDecoder):
    """PixelCNN: a 7x7 mask-A convolution, residual 3x3 mask-B layers, a 1x1 head (has the blind spot)."""

    Options = PixelCNNOptions

    def __init__(self, options: PixelCNNOptions, spec: SliceSpec) -> None:
        super().__init__(options, spec)
        check_channel_groups(spec, channels=options.channels, head_channels=options.head_channels)
        c, f = spec.channels, options.channels
        self.first = MaskedConv2d(c * spec.levels, f, (7, 7), c, "A")
        self.layers = nn.ModuleList(MaskedConv2d(f, f, (3, 3), c, "B") for _ in range(options.layers))
        self.context = Conv1x1(spec.context_channels, f) if spec.context_channels else None
        self.head = MaskedHead(f, options.head_channels, spec)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, L, C, h, w]`` one-hot, context ``[B, D, h, w]`` -> logits ``[B, L, C, h, w]``."""
        return self._rest(self.first(pixels_as_features(x)), context)

    def forward_levels(self, levels: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``forward`` of the one-hot of ``levels [B, C, h, w]`` long, the 7x7 layer reading the
        levels (``MaskedConv2d.of_levels``): logits ``[B, L, C, h, w]``, laid out channels-last."""
        return self._rest(self.first.of_levels(levels, self.spec.levels), context)

    def _rest(self, h: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Everything after the first layer's output ``h [B, F, h, w]``: logits ``[B, L, C, h, w]``."""
        if self.context is not None:
            h = h + self.context(context)
        for layer in self.layers:
            h = h + layer(torch.relu(h))
        return features_as_logits(self.head(h), self.spec.levels)

    def sampling_cache(self, inputs: PixelInputs, context: torch.Tensor | None) -> SliceCache:
        return _PixelCNNCache(self, inputs, context)


class _PixelCNNCache(SliceCache):
    """Incremental ``PixelCNN``. Each layer's output at a pixel is split where its masked
    kernel meets the pixel: the rows above, for a whole row once the rows before it are
    complete (``finish_row``); the taps to the left, once per pixel (``start_pixel``); the
    centre tap, the only one that reads the pixel itself, per channel. The first layer sums
    weight rows of the drawn levels (``OneHotTaps``); the residual layers read their relu'd
    inputs, kept as maps ``[B, F, h, w]``."""

    def __init__(self, model: PixelCNN, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        b, _, height, width = inputs.features.shape
        self.inputs = inputs
        first = model.first.masked_weight()  # [F, C*L, 7, 7]
        reach = self.reach = first.shape[3] // 2
        self.first_above = OneHotTaps(first[:, :, :reach], inputs.levels)
        self.first_left = OneHotTaps(first[:, :, reach : reach + 1, :reach], inputs.levels)
        self.first_centre = OneHotTaps(first[:, :, reach : reach + 1, reach : reach + 1], inputs.levels)
        self.first_bias = model.first.bias
        self.kernels = [layer.masked_weight() for layer in model.layers]  # [F, F, 3, 3]
        self.biases = [layer.bias for layer in model.layers]
        self.centre = [centre_tap(kernel) for kernel in self.kernels]  # [F, F]
        self.left = [left_taps(kernel, 1) for kernel in self.kernels]  # the one pixel to the left, [F, F]
        self.maps = [inputs.features.new_zeros(b, height, width, model.options.channels).permute(0, 3, 1, 2)
                     for _ in model.layers]  # channels-last: a pixel's features contiguous
        self.context = None if model.context is None else model.context(context)  # added to the first layer's output
        self.head = model.head.at_pixel()
        self.from_above = self._from_above(0)
        self.base = self.latest = None

    def _from_above(self, row: int) -> torch.Tensor:
        """What every layer's output at row ``row`` takes from the rows above it, biases and
        context included: ``[w, layers, B, F]``."""
        b, _, _, width = self.inputs.values.shape
        windows = level_windows(self.inputs.values, row - self.reach, row, self.reach, self.reach)
        first = self.first_above(windows).view(b, width, -1) + self.first_bias
        if self.context is not None:
            first = first + self.context[:, :, row].transpose(1, 2)
        parts = [first] + [rows_above(x, kernel, row).transpose(1, 2) + bias
                           for x, kernel, bias in zip(self.maps, self.kernels, self.biases)]  # [B, w, F]
        return torch.stack(parts).permute(2, 0, 1, 3).contiguous()

    def _keep(self, row: int, col: int) -> None:
        """Write the residual layers' inputs at the pixel just drawn into their maps."""
        for x, latest in zip(self.maps, self.latest):
            x[:, :, row, col] = latest

    def start_pixel(self, row: int, col: int) -> None:
        first, *rest = self.from_above[col].unbind(0)
        if col:
            self._keep(row, col - 1)
            first = first + self.first_left(levels_left(self.inputs.values, row, col, self.reach))
            rest = [torch.addmm(base, x[:, :, row, col - 1], left) for base, x, left in zip(rest, self.maps, self.left)]
        self.base = [first, *rest]

    def _features(self, row: int, col: int) -> torch.Tensor:
        """The head's input ``[B, F]`` at (row, col). The pixel's levels not drawn yet read as 0 in
        the first layer: its centre tap's channel mask passes them only to features of the
        channels after the one being drawn."""
        h = self.base[0] + self.first_centre(self.inputs.values[:, :, row, col][:, None, None])
        self.latest = []
        for base, centre in zip(self.base[1:], self.centre):
            self.latest.append(torch.relu(h))
            h = h + torch.addmm(base, self.latest[-1], centre)
        return h

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        return self.head.logits(self._features(row, col))

    def channel_logits(self, row: int, col: int, channel: int) -> torch.Tensor:
        return self.head.channel_logits(self._features(row, col), channel)

    def finish_row(self, row: int) -> None:
        self._keep(row, self.inputs.values.shape[3] - 1)
        if row + 1 < self.inputs.values.shape[2]:
            self.from_above = self._from_above(row + 1)


@hookimpl
def spnkit_register_decoders(register):
    register("pixelcnn", PixelCNN)
    register("gated_pixelcnn", GatedPixelCNN)
