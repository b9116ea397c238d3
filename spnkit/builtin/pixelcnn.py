"""PixelCNN (van den Oord et al. 2016b) and Gated PixelCNN (van den Oord et al. 2016c) decoders.

Both read the one-hot slice as ``[B, C*L, h, w]`` in channel-major order, so input feature
``c*L + l`` belongs to image channel ``c``, and end in a masked 1x1 head whose logits for
channel ``c`` come from channel-``c`` features only.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

from spnkit.builtin.caches import GatedCache, MaskedConvCache, PixelInputs, sample_slice
from spnkit.core.hookspecs import hookimpl
from spnkit.core.interfaces import SliceDecoder, SliceSpec
from spnkit.nn.masked_conv import HorizontalConv, MaskedConv2d, VerticalConv, shift_down

_positive = attrs.validators.ge(1)


def _odd(instance, attribute, value):
    if value < 1 or value % 2 == 0:
        raise ValueError(f"{attribute.name} must be a positive odd number, got {value}")


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
        self.hidden = MaskedConv2d(features, hidden, (1, 1), c, "B")
        self.out = MaskedConv2d(hidden, c * spec.levels, (1, 1), c, "B")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(torch.relu(h))))


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

    layers: int = attrs.field(default=6, validator=_positive)
    channels: int = attrs.field(default=48, validator=_positive)
    head_channels: int = attrs.field(default=96, validator=_positive)


class PixelCNN(SliceDecoder):
    """PixelCNN: a 7x7 mask-A convolution, residual 3x3 mask-B layers, a 1x1 head (has the blind spot)."""

    Options = PixelCNNOptions

    def __init__(self, options: PixelCNNOptions, spec: SliceSpec) -> None:
        super().__init__(options, spec)
        _check_groups(spec, channels=options.channels, head_channels=options.head_channels)
        c, f = spec.channels, options.channels
        self.first = MaskedConv2d(c * spec.levels, f, (7, 7), c, "A")
        self.layers = nn.ModuleList(MaskedConv2d(f, f, (3, 3), c, "B") for _ in range(options.layers))
        self.context = nn.Conv2d(spec.context_channels, f, 1) if spec.context_channels else None
        self.head = MaskedHead(f, options.head_channels, spec)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, L, C, h, w]`` one-hot, context ``[B, D, h, w]`` -> logits ``[B, L, C, h, w]``."""
        h = self.first(pixels_as_features(x))
        if self.context is not None:
            h = h + self.context(context)
        for layer in self.layers:
            h = h + layer(torch.relu(h))
        return features_as_logits(self.head(h), self.spec.levels)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, context: torch.Tensor | None = None, temperature: float = 1.0,
               given: torch.Tensor | None = None) -> torch.Tensor:
        """Fast path: every layer evaluated at the new pixel only, from cached maps."""
        inputs = PixelInputs(self.spec, noise)
        return sample_slice(self, MaskedConvCache(self, inputs, context), inputs, noise, temperature, given)


# ----------------------------------------------------------------------------- Gated PixelCNN


@attrs.frozen
class GatedPixelCNNOptions:
    """``layers`` gated layers; each reaches ``filter_size // 2`` pixels further up, left and
    right (``filter_size`` odd); ``channels`` features per stack (the paper's "conv channels");
    ``residual_channels`` features in the skip path and output head (Table 4: 1280)."""

    layers: int = attrs.field(default=6, validator=_positive)
    filter_size: int = attrs.field(default=3, validator=_odd)
    channels: int = attrs.field(default=48, validator=_positive)
    residual_channels: int = attrs.field(default=96, validator=_positive)


def _gate(x: torch.Tensor) -> torch.Tensor:
    """``[B, 2F, h, w]`` -> ``tanh(first half) * sigmoid(second half)``: ``[B, F, h, w]``."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One layer of both stacks (paper Eq. 5): vertical and horizontal convolutions, the
    vertical stack fed to the horizontal one after a one-row shift, the context map added
    before the tanh x sigmoid gates, a residual and a skip output on the horizontal stack."""

    def __init__(self, in_features: int, features: int, skip: int, filter_size: int, spec: SliceSpec,
                 first: bool) -> None:
        super().__init__()
        c = spec.channels
        self.first = first
        self.vertical = VerticalConv(in_features, 2 * features, filter_size)
        self.horizontal = HorizontalConv(in_features, 2 * features, filter_size, c, "A" if first else "B",
                                         out_chunks=2)
        self.vertical_to_horizontal = nn.Conv2d(2 * features, 2 * features, 1)
        self.context = nn.Conv2d(spec.context_channels, 4 * features, 1) if spec.context_channels else None
        self.residual = None if first else MaskedConv2d(features, features, (1, 1), c, "B")
        self.skip = MaskedConv2d(features, skip, (1, 1), c, "B")

    def forward(self, v: torch.Tensor, h: torch.Tensor, context: torch.Tensor | None):
        """v, h ``[B, F_in, h, w]`` -> (v, h ``[B, F, h, w]``, skip ``[B, R, h, w]``)."""
        v_pre = self.vertical(v)
        h_pre = self.horizontal(h) + self.vertical_to_horizontal(shift_down(v_pre))
        if self.context is not None:
            v_context, h_context = self.context(context).chunk(2, dim=1)
            v_pre, h_pre = v_pre + v_context, h_pre + h_context
        gated = _gate(h_pre)
        h_out = gated if self.residual is None else h + self.residual(gated)
        return _gate(v_pre), h_out, self.skip(gated)


class GatedPixelCNN(SliceDecoder):
    """Gated PixelCNN: vertical and horizontal stacks (no blind spot), gates, context before the gates."""

    Options = GatedPixelCNNOptions

    def __init__(self, options: GatedPixelCNNOptions, spec: SliceSpec) -> None:
        super().__init__(options, spec)
        _check_groups(spec, channels=options.channels, residual_channels=options.residual_channels)
        f, inputs = options.channels, spec.channels * spec.levels
        self.layers = nn.ModuleList(
            GatedLayer(inputs if i == 0 else f, f, options.residual_channels, options.filter_size, spec, first=i == 0)
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

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, context: torch.Tensor | None = None, temperature: float = 1.0,
               given: torch.Tensor | None = None) -> torch.Tensor:
        """Fast path: the vertical stack once per row, the horizontal stack per subpixel."""
        inputs = PixelInputs(self.spec, noise)
        return sample_slice(self, GatedCache(self, inputs, context), inputs, noise, temperature, given)


@hookimpl
def spnkit_register_decoders(register):
    register("pixelcnn", PixelCNN)
    register("gated_pixelcnn", GatedPixelCNN)
