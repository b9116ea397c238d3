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
    OneHotTaps,
    VerticalConv,
    centre_tap,
    check_channel_groups,
    features_as_logits,
    left_taps,
    level_windows,
    levels_left,
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
        return self._gates(self.vertical(v), self.horizontal(h), h, context)

    def of_levels(self, levels: torch.Tensor, count: int, context: torch.Tensor | None):
        """``forward`` of the first layer, whose stacks both read the channel-major one-hot
        of ``levels [B, C, h, w]`` long (``count`` levels), both read by ``one_hot_conv``
        (a gather for many levels): (v, h, skip) as ``forward``, channels-last."""
        return self._gates(self.vertical.of_levels(levels, count), self.horizontal.of_levels(levels, count), None,
                           context)

    def _gates(self, v_pre: torch.Tensor, h_conv: torch.Tensor, h: torch.Tensor | None, context: torch.Tensor | None):
        """The layer after its two stack convolutions: ``v_pre``, ``h_conv`` ``[B, 2F, h, w]``,
        ``h`` the horizontal input (None in the first layer, which has no residual)."""
        # vertical_to_horizontal(shift_down(v_pre)), shifted after the 1x1 convolution (they commute
        # but for its bias: the row shifted in on top is zero before it): its input is v_pre itself,
        # not a shifted copy
        v2h = self.vertical_to_horizontal
        h_pre = (h_conv + shift_down(nn.functional.conv2d(v_pre, v2h.weight))).add_(v2h.bias.view(-1, 1, 1))
        if self.context is not None:
            v_context, h_context = self.context(context).chunk(2, dim=1)
            v_pre, h_pre = v_pre + v_context, h_pre + h_context
        gated = gate(h_pre)
        h_out = gated if self.residual is None else h + self.residual(gated)
        return gate(v_pre), h_out, self.skip(gated)

    def vertical_gate(self, v_pre: torch.Tensor, row: int, context: torch.Tensor | None) -> torch.Tensor:
        """The vertical stack's output at one row from its pre-gate ``v_pre [B, 2F, w]`` (before
        the context), context ``[B, D, h, w]`` or None: ``[B, F, w]``."""
        if self.context is not None:
            v_pre = v_pre + self.context(context[:, :, row : row + 1])[:, :, 0].chunk(2, dim=1)[0]
        return gate(v_pre)


class GatedStackCache:
    """Incremental evaluation of ``GatedLayer``s while a slice is sampled.

    A layer's horizontal pre-gate at a pixel is split in two: what earlier pixels give (the
    ``k//2`` inputs to its left, the vertical stack of the row above, the context at the pixel
    and the biases), summed for every layer once per pixel by ``start_pixel``, and what the
    pixel's own input gives (the centre tap), added per channel by ``skip_at_pixel``. The
    vertical stacks run once per finished row (``finish_row``). Masked weights are taken once;
    the first layer, whose input is one-hot, sums weight rows of the drawn levels instead
    (``OneHotTaps``).

    ``inputs``: the slice being drawn, the first layer's input; ``context [B, D, h, w]`` or
    None, read at the rows and pixels being computed.
    """

    def __init__(self, layers: nn.ModuleList, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        self.layers, self.inputs, self.context = layers, inputs, context
        b, _, height, width = inputs.features.shape
        first, rest = layers[0], layers[1:]
        reach = self.reach = first.horizontal.reach
        kernel = first.horizontal.masked_weight()  # [2F, C*L, 1, 2*reach + 1]
        self.first_vertical = OneHotTaps(first.vertical.weight, inputs.levels)
        self.first_left = OneHotTaps(kernel[..., :reach], inputs.levels)
        self.first_centre = OneHotTaps(kernel[..., reach : reach + 1], inputs.levels)
        kernels = [layer.horizontal.masked_weight() for layer in rest]
        self.centre = [centre_tap(kernel) for kernel in kernels]  # [F, 2F]
        self.left = [left_taps(kernel, reach) for kernel in kernels]  # [k//2 * F, 2F]
        self.residual = [(layer.residual.bias, centre_tap(layer.residual.masked_weight())) for layer in rest]
        self.skip_weight = torch.cat([centre_tap(layer.skip.masked_weight()) for layer in layers])  # [L*F, R]
        self.skip_bias = sum(layer.skip.bias for layer in layers)
        if context is not None:  # the horizontal stacks' halves of the context maps, every layer at once
            features = 2 * first.features
            self.context_weight = torch.cat([layer.context.weight[features:, :, 0, 0] for layer in layers])
            self.context_bias = torch.cat([layer.context.bias[features:] for layer in layers])
        self.v = [inputs.features.new_zeros(b, layer.features, height, width) for layer in layers]
        above_first_row = [inputs.features.new_zeros(b, 2 * layer.features, width) for layer in layers]
        self.from_above = self._from_above(above_first_row)
        # the later layers' inputs [B, F] at the k//2 pixels left of the pixel, zeros off the image
        self.row_start = [[inputs.features.new_zeros(b, first.features)] * reach for _ in rest]
        self.windows = self.layer_inputs = self.base = None

    def _from_above(self, v_pres: list[torch.Tensor]) -> torch.Tensor:
        """What the horizontal stacks of a row take from the vertical pre-gates ``[B, 2F, w]`` of
        the row above (zeros above the first row), their biases included: ``[w, layers, B, 2F]``."""
        parts = [layer.vertical_to_horizontal.pointwise(v_pre.transpose(1, 2)) + layer.horizontal.conv.bias
                 for layer, v_pre in zip(self.layers, v_pres)]  # [B, w, 2F]
        return torch.stack(parts).permute(2, 0, 1, 3).contiguous()

    def start_pixel(self, row: int, col: int) -> None:
        """Sum what the pixels before (row, col) give to every layer's horizontal pre-gate."""
        base = self.from_above[col]  # [layers, B, 2F]
        if self.context is not None:
            at = nn.functional.linear(self.context[:, :, row, col], self.context_weight, self.context_bias)
            base = base + at.view(at.shape[0], len(self.layers), -1).transpose(0, 1)
        first, *rest = base.unbind(0)
        if col:
            first = first + self.first_left(levels_left(self.inputs.values, row, col, self.reach))
            self.windows = [[*window[1:], x] for window, x in zip(self.windows, self.layer_inputs)]
        else:
            self.windows = self.row_start
        self.base = [first] + [torch.addmm(b, window[0] if self.reach == 1 else torch.cat(window, dim=1), left)
                               for b, window, left in zip(rest, self.windows, self.left)]

    def skip_at_pixel(self, row: int, col: int) -> torch.Tensor:
        """The summed skip outputs ``[B, R]`` of every layer at (row, col), given the pixels so far.

        The pixel's levels not drawn yet read as 0 in the first layer: its centre tap's channel
        mask passes them only to features of the channels after the one being drawn."""
        x = gate(self.base[0] + self.first_centre(self.inputs.values[:, :, row, col][:, None, None]))
        gated, self.layer_inputs = [x], []
        for base, centre, (bias, residual) in zip(self.base[1:], self.centre, self.residual):
            self.layer_inputs.append(x)
            gated.append(gate(torch.addmm(base, x, centre)))
            x = torch.addmm(bias, gated[-1], residual).add_(x)
        return torch.addmm(self.skip_bias, torch.cat(gated, dim=1), self.skip_weight)

    def finish_row(self, row: int) -> None:
        """Run the vertical stacks over a completed row (the next row reads it, shifted)."""
        b, _, _, width = self.inputs.values.shape
        windows = level_windows(self.inputs.values, row - self.reach, row + 1, self.reach, self.reach)
        v_pre = self.first_vertical(windows).view(b, width, -1).transpose(1, 2)  # [B, 2F, w]
        v_pre = v_pre + self.layers[0].vertical.bias.view(-1, 1)
        v_pres = []
        for i, (layer, v_out) in enumerate(zip(self.layers, self.v)):
            if i:
                v_pre = layer.vertical.at_row(self.v[i - 1], row)
            v_out[:, :, row] = layer.vertical_gate(v_pre, row, self.context)
            v_pres.append(v_pre)
        self.from_above = self._from_above(v_pres)


@attrs.frozen
class GatedPixelCNNOptions:
    """``layers`` gated layers; each reaches ``filter_size // 2`` pixels further up, left and
    right (``filter_size`` odd); ``channels`` features per stack (the paper's "conv channels");
    ``residual_channels`` features in the skip path and output head (Table 4: 1280)."""

    layers: int = attrs.field(default=6, validator=up_to(256), metadata={"doc": "gated layers"})
    filter_size: int = attrs.field(default=3, validator=[odd, at_most(63)],
                                 metadata={"doc": "each layer reaches filter_size // 2 pixels further up, left and right"})
    channels: int = attrs.field(default=48, validator=up_to(16384),
                              metadata={"doc": "features per stack (the paper's conv channels)"})
    residual_channels: int = attrs.field(default=96, validator=up_to(16384),
                                       metadata={"doc": "features of the skip path and output head (the paper's residual channels)"})


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

    def forward_levels(self, levels: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``forward`` of the one-hot of ``levels [B, C, h, w]`` long, the first layer reading the
        levels (``GatedLayer.of_levels``): logits ``[B, L, C, h, w]``, laid out channels-last (``[B, h, w, C, L]`` in memory)."""
        first, *rest = self.layers
        v, h, skips = first.of_levels(levels, self.spec.levels, context)
        for layer in rest:
            v, h, skip = layer(v, h, context)
            skips = skips + skip
        return features_as_logits(self.head(skips), self.spec.levels)

    def sampling_cache(self, inputs: PixelInputs, context: torch.Tensor | None) -> SliceCache:
        return _GatedPixelCNNCache(self, inputs, context)


class _GatedPixelCNNCache(SliceCache):
    """Incremental ``GatedPixelCNN``: the vertical stack once per finished row, the horizontal
    stack and the head at the new pixel."""

    def __init__(self, model: GatedPixelCNN, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        self.head = model.head.at_pixel()
        self.stack = GatedStackCache(model.layers, inputs, context)

    def start_pixel(self, row: int, col: int) -> None:
        self.stack.start_pixel(row, col)

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        return self.head.logits(self.stack.skip_at_pixel(row, col))

    def channel_logits(self, row: int, col: int, channel: int) -> torch.Tensor:
        return self.head.channel_logits(self.stack.skip_at_pixel(row, col), channel)

    def finish_row(self, row: int) -> None:
        self.stack.finish_row(row)
