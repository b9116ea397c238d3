"""PixelCNN (van den Oord et al. 2016b) and Gated PixelCNN (van den Oord et al. 2016c) decoders.

Both read the one-hot slice as ``[B, C*L, h, w]`` in channel-major order, so input feature
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
from spnkit.core.validators import odd, positive
from spnkit.nn.gated import GatedLayer, GatedStackCache
from spnkit.nn.masked_conv import Conv1x1, MaskedConv2d


def pixels_as_features(x: torch.Tensor) -> torch.Tensor:
    """One-hot ``[B, L, C, h, w]`` -> ``[B, C*L, h, w]`` (channel-major)."""
    b, levels, c, h, w = x.shape
    return x.transpose(1, 2).reshape(b, c * levels, h, w)


def features_as_logits(h: torch.Tensor, levels: int) -> torch.Tensor:
    """``[B, C*L, h, w]`` (channel-major) -> logits ``[B, L, C, h, w]``."""
    b, _, height, width = h.shape
    return h.view(b, -1, levels, height, width).transpose(1, 2)


class MaskedHead(nn.Module):
    """relu -> masked 1x1 -> relu -> masked 1x1 to ``C*L`` logits, channel groups kept apart."""

    def __init__(self, features: int, hidden: int, spec: SliceSpec) -> None:
        super().__init__()
        c = spec.channels
        self.levels = spec.levels
        self.hidden = MaskedConv2d(features, hidden, (1, 1), c, "B")
        self.out = MaskedConv2d(hidden, c * spec.levels, (1, 1), c, "B")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(torch.relu(h))))

    def pixel_logits(self, h: torch.Tensor) -> torch.Tensor:
        """The head at one pixel: features ``[B, F]`` -> logits ``[B, L, C]``."""
        out = self.out.pointwise(torch.relu(self.hidden.pointwise(torch.relu(h))))
        return out.view(out.shape[0], -1, self.levels).transpose(1, 2)


def _check_groups(spec: SliceSpec, **features: int) -> None:
    for name, count in features.items():
        if count < spec.channels:
            raise ValueError(f"{name} ({count}) must be at least the image channels ({spec.channels}): "
                             "each colour channel needs its own group of features")


# ----------------------------------------------------------------------------- PixelCNN


@attrs.frozen
class PixelCNNOptions:
    """``layers`` residual 3x3 mask-B layers of ``channels`` features after the 7x7 mask-A
    input layer; ``head_channels`` hidden features in the 1x1 output head."""

    layers: int = attrs.field(default=6, validator=positive)
    channels: int = attrs.field(default=48, validator=positive)
    head_channels: int = attrs.field(default=96, validator=positive)


class PixelCNN(SliceDecoder):
    """PixelCNN: a 7x7 mask-A convolution, residual 3x3 mask-B layers, a 1x1 head (has the blind spot)."""

    Options = PixelCNNOptions

    def __init__(self, options: PixelCNNOptions, spec: SliceSpec) -> None:
        super().__init__(options, spec)
        _check_groups(spec, channels=options.channels, head_channels=options.head_channels)
        c, f = spec.channels, options.channels
        self.first = MaskedConv2d(c * spec.levels, f, (7, 7), c, "A")
        self.layers = nn.ModuleList(MaskedConv2d(f, f, (3, 3), c, "B") for _ in range(options.layers))
        self.context = Conv1x1(spec.context_channels, f) if spec.context_channels else None
        self.head = MaskedHead(f, options.head_channels, spec)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, L, C, h, w]`` one-hot, context ``[B, D, h, w]`` -> logits ``[B, L, C, h, w]``."""
        h = self.first(pixels_as_features(x))
        if self.context is not None:
            h = h + self.context(context)
        for layer in self.layers:
            h = h + layer(torch.relu(h))
        return features_as_logits(self.head(h), self.spec.levels)

    def sampling_cache(self, inputs: PixelInputs, context: torch.Tensor | None) -> SliceCache:
        return _PixelCNNCache(self, inputs, context)


class _PixelCNNCache(SliceCache):
    """Incremental ``PixelCNN``: every layer at the new pixel only, from a kernel-sized window
    of the cached (relu'd) input map of each residual layer."""

    def __init__(self, model: PixelCNN, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        self.model, self.inputs, self.context = model, inputs, context
        b, _, height, width = inputs.features.shape
        self.layer_inputs = [inputs.features.new_zeros(b, model.options.channels, height, width)
                             for _ in model.layers]

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        model = self.model
        h = model.first.at_pixel(self.inputs.features, row, col)
        if model.context is not None:
            h = h + model.context.pointwise(self.context[:, :, row, col])
        for layer, layer_input in zip(model.layers, self.layer_inputs):
            layer_input[:, :, row, col] = torch.relu(h)
            h = h + layer.at_pixel(layer_input, row, col)
        return model.head.pixel_logits(h)


# ----------------------------------------------------------------------------- Gated PixelCNN


@attrs.frozen
class GatedPixelCNNOptions:
    """``layers`` gated layers; each reaches ``filter_size // 2`` pixels further up, left and
    right (``filter_size`` odd); ``channels`` features per stack (the paper's "conv channels");
    ``residual_channels`` features in the skip path and output head (Table 4: 1280)."""

    layers: int = attrs.field(default=6, validator=positive)
    filter_size: int = attrs.field(default=3, validator=odd)
    channels: int = attrs.field(default=48, validator=positive)
    residual_channels: int = attrs.field(default=96, validator=positive)


class GatedPixelCNN(SliceDecoder):
    """Gated PixelCNN: vertical and horizontal stacks (no blind spot), gates, context before the gates."""

    Options = GatedPixelCNNOptions

    def __init__(self, options: GatedPixelCNNOptions, spec: SliceSpec) -> None:
        super().__init__(options, spec)
        _check_groups(spec, channels=options.channels, residual_channels=options.residual_channels)
        f, inputs = options.channels, spec.channels * spec.levels
        self.layers = nn.ModuleList(
            GatedLayer(inputs if i == 0 else f, f, options.residual_channels, options.filter_size, spec.channels,
                       spec.context_channels, first=i == 0)
            for i in range(options.layers)
        )
        self.head = MaskedHead(options.residual_channels, options.residual_channels, spec)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, L, C, h, w]`` one-hot, context ``[B, D, h, w]`` -> logits ``[B, L, C, h, w]``."""
        v = h = pixels_as_features(x)
        skips = 0
        for layer in self.layers:
            v, h, skip = layer(v, h, context)
            skips = skips + skip
        return features_as_logits(self.head(skips), self.spec.levels)

    def sampling_cache(self, inputs: PixelInputs, context: torch.Tensor | None) -> SliceCache:
        return _GatedPixelCNNCache(self, inputs, context)


class _GatedPixelCNNCache(SliceCache):
    """Incremental ``GatedPixelCNN``: the vertical stack once per finished row, the horizontal
    stack and the head at the new pixel."""

    def __init__(self, model: GatedPixelCNN, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        self.head = model.head
        self.stack = GatedStackCache(model.layers, inputs.features, context)

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        return self.head.pixel_logits(self.stack.skip_at_pixel(row, col))

    def finish_row(self, row: int) -> None:
        self.stack.finish_row(row)


@hookimpl
def spnkit_register_decoders(register):
    register("pixelcnn", PixelCNN)
    register("gated_pixelcnn", GatedPixelCNN)
