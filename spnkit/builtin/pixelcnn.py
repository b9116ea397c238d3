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
from spnkit.nn.masked_conv import Conv1x1, MaskedConv2d, MaskedHead, check_channel_groups, features_as_logits
from spnkit.nn.masked_conv import pixels_as_features


# ----------------------------------------------------------------------------- PixelCNN


@attrs.frozen
class PixelCNNOptions:
    """``layers`` residual 3x3 mask-B layers of ``channels`` features after the 7x7 mask-A
    input layer; ``head_channels`` hidden features in the 1x1 output head."""

    layers: int = attrs.field(default=6, validator=up_to(256))
    channels: int = attrs.field(default=48, validator=up_to(16384))
    head_channels: int = attrs.field(default=96, validator=up_to(16384))


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




@hookimpl
def spnkit_register_decoders(register):
    register("pixelcnn", PixelCNN)
    register("gated_pixelcnn", GatedPixelCNN)
