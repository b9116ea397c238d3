"""The Gated PixelCNN (van den Oord et al. 2016c): its layers, the whole decoder (registered
by ``spnkit.builtin.pixelcnn``, reused inside the hybrid decoder) and their incremental
evaluation for sampling: the vertical stack once per finished row, the horizontal stack at one
pixel."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from spnkit.core.interfaces import SliceDecoder, SliceSpec
from spnkit.core.sampling import PixelInputs, SliceCache
from spnkit.core.validators import at_most, odd, up_to
from spnkit.nn.masked_conv import (
    Conv1x1,
    HorizontalConv,
    MaskedConv2d,
    MaskedHead,
    VerticalConv,
    check_channel_groups,
    features_as_logits,
    pixels_as_features,
    shift_down,
)


def gate(x: torch.Tensor) -> torch.Tensor:
    """``[B, 2F, ...]`` -> ``tanh(first half) * sigmoid(second half)``: ``[B, F, ...]``."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One layer of both stacks (paper Eq. 5): vertical and horizontal convolutions, the
    vertical stack fed to the horizontal one after a one-row shift, the context map added
    before the tanh x sigmoid gates, a residual and a skip output on the horizontal stack.

    ``channels`` image channels (the masks' groups); ``context_channels`` 0: no context.
    """

    def __init__(self, in_features: int, features: int, skip: int, filter_size: int, channels: int,
                 context_channels: int, first: bool) -> None:
        super().__init__()
        self.features = features
        self.vertical = VerticalConv(in_features, 2 * features, filter_size)
        self.horizontal = HorizontalConv(in_features, 2 * features, filter_size, channels, "A" if first else "B",
                                         out_chunks=2)
        self.vertical_to_horizontal = Conv1x1(2 * features, 2 * features)
        self.context = Conv1x1(context_channels, 4 * features) if context_channels else None
        self.residual = None if first else MaskedConv2d(features, features, (1, 1), channels, "B")
        self.skip = MaskedConv2d(features, skip, (1, 1), channels, "B")

    def forward(self, v: torch.Tensor, h: torch.Tensor, context: torch.Tensor | None):
        """v, h ``[B, F_in, h, w]`` -> (v, h ``[B, F, h, w]``, skip ``[B, R, h, w]``)."""
        v_pre = self.vertical(v)
        h_pre = self.horizontal(h) + self.vertical_to_horizontal(shift_down(v_pre))
        if self.context is not None:
            v_context, h_context = self.context(context).chunk(2, dim=1)
            v_pre, h_pre = v_pre + v_context, h_pre + h_context
        gated = gate(h_pre)
        h_out = gated if self.residual is None else h + self.residual(gated)
        return gate(v_pre), h_out, self.skip(gated)

    def vertical_at_row(self, v: torch.Tensor, row: int, context: torch.Tensor | None):
        """The vertical stack at one row: v ``[B, F_in, h, w]`` (rows up to ``row`` filled),
        context ``[B, D, h, w]`` or None -> (pre-gate ``[B, 2F, w]`` before the context, which
        the horizontal stack reads a row later; gated output ``[B, F, w]``)."""
        v_pre = self.vertical.at_row(v, row)
        v_in = v_pre
        if self.context is not None:
            v_in = v_in + self.context(context[:, :, row : row + 1])[:, :, 0].chunk(2, dim=1)[0]
        return v_pre, gate(v_in)

    def horizontal_at_pixel(self, h: torch.Tensor, row: int, col: int, v_pre_above: torch.Tensor,
                            context: torch.Tensor | None):
        """The horizontal stack at one pixel: h ``[B, F_in, h, w]`` (filled up to the pixel),
        v_pre_above ``[B, 2F]`` the vertical pre-gate of the pixel above (zeros on the top row),
        context ``[B, D, h, w]`` or None -> (h ``[B, F]``, skip ``[B, R]``)."""
        h_pre = self.horizontal.at_pixel(h, row, col) + self.vertical_to_horizontal.pointwise(v_pre_above)
        if self.context is not None:
            h_pre = h_pre + self.context.pointwise(context[:, :, row, col]).chunk(2, dim=1)[1]
        gated = gate(h_pre)
        h_out = gated if self.residual is None else h[:, :, row, col] + self.residual.pointwise(gated)
        return h_out, self.skip.pointwise(gated)


class GatedStackCache:
    """Incremental evaluation of ``GatedLayer``s while a slice is sampled: the vertical stacks
    once per finished row (``finish_row``), the horizontal stacks at one pixel (``skip_at_pixel``),
    each from cached feature maps of the layer below.

    ``pixels [B, F_in, h, w]``: the first layer's input, filled in by the sampler as subpixels
    are drawn; ``context [B, D, h, w]`` or None, read at the rows and pixels being computed.
    """

    def __init__(self, layers: nn.ModuleList, pixels: torch.Tensor, context: torch.Tensor | None) -> None:
        self.layers, self.pixels, self.context = layers, pixels, context
        b, _, height, width = pixels.shape
        new = pixels.new_zeros
        self.h = [new(b, layer.features, height, width) for layer in layers]
        self.v = [new(b, layer.features, height, width) for layer in layers]
        self.v_pre = [new(b, 2 * layer.features, height, width) for layer in layers]

    def skip_at_pixel(self, row: int, col: int) -> torch.Tensor:
        """The summed skip outputs ``[B, R]`` of every layer at (row, col), given the pixels so far."""
        h, skips = self.pixels, 0
        for layer, h_out, v_pre in zip(self.layers, self.h, self.v_pre):
            above = v_pre[:, :, row - 1, col] if row else v_pre.new_zeros(v_pre.shape[:2])
            h_out[:, :, row, col], skip = layer.horizontal_at_pixel(h, row, col, above, self.context)
            skips = skips + skip
            h = h_out
        return skips

    def finish_row(self, row: int) -> None:
        """Run the vertical stacks over a completed row (the next row reads it, shifted)."""
        v = self.pixels
        for layer, v_out, v_pre in zip(self.layers, self.v, self.v_pre):
            v_pre[:, :, row], v_out[:, :, row] = layer.vertical_at_row(v, row, self.context)
            v = v_out


@attrs.frozen
class GatedPixelCNNOptions:
    """``layers`` gated layers; each reaches ``filter_size // 2`` pixels further up, left and
    right (``filter_size`` odd); ``channels`` features per stack (the paper's "conv channels");
    ``residual_channels`` features in the skip path and output head (Table 4: 1280)."""

    layers: int = attrs.field(default=6, validator=up_to(256))
    filter_size: int = attrs.field(default=3, validator=[odd, at_most(63)])
    channels: int = attrs.field(default=48, validator=up_to(16384))
    residual_channels: int = attrs.field(default=96, validator=up_to(16384))


class GatedPixelCNN(SliceDecoder):
    """Gated PixelCNN: vertical and horizontal stacks (no blind spot), gates, context before the gates."""

    Options = GatedPixelCNNOptions

    def __init__(self, options: GatedPixelCNNOptions, spec: SliceSpec) -> None:
        super().__init__(options, spec)
        check_channel_groups(spec, channels=options.channels, residual_channels=options.residual_channels)
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
