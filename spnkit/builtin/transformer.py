"""The masked transformer decoder and the SPN's hybrid decoder (Menick & Kalchbrenner 2018):
masked 1D self-attention over the flattened slice, reshaped back, concatenated with the
context map and fed to a Gated PixelCNN as its conditioning."""

from __future__ import annotations

import attrs
import torch
from torch import nn
from torch.nn import functional as F

from spnkit.builtin.caches import AttentionCache, GatedCache, PixelInputs, sample_slice
from spnkit.builtin.pixelcnn import GatedPixelCNN, GatedPixelCNNOptions, pixels_as_features
from spnkit.core.hookspecs import hookimpl
from spnkit.core.interfaces import SliceDecoder, SliceSpec
from spnkit.nn.attention import TransformerBlock, divides

_positive = attrs.validators.ge(1)


@attrs.frozen
class MaskedTransformerOptions:
    layers: int = attrs.field(default=2, validator=_positive)
    heads: int = attrs.field(default=4, validator=[_positive, divides("channels")])
    channels: int = attrs.field(default=64, validator=_positive)
    ff_multiplier: int = attrs.field(default=4, validator=_positive)


class PixelAttention(nn.Module):
    """Causal self-attention over a slice's pixels in raster order: the features at pixel p
    depend only on pixels before p (inputs are shifted right by one pixel behind a learned
    start token), plus learned row and column embeddings and the context map."""

    def __init__(self, options: MaskedTransformerOptions, spec: SliceSpec) -> None:
        super().__init__()
        d = options.channels
        self.embed = nn.Linear(spec.channels * spec.levels, d)
        self.start = nn.Parameter(torch.zeros(d))
        self.rows = nn.Parameter(torch.randn(spec.height, d) * 0.02)
        self.cols = nn.Parameter(torch.randn(spec.width, d) * 0.02)
        self.context = nn.Linear(spec.context_channels, d) if spec.context_channels else None
        self.blocks = nn.ModuleList(TransformerBlock(d, options.heads, causal=True, ff_multiplier=options.ff_multiplier)
                                    for _ in range(options.layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, L, C, h, w]`` one-hot, context ``[B, D_ctx, h, w]`` -> ``[B, D, h, w]``."""
        b, _, _, h, w = x.shape
        pixels = pixels_as_features(x).flatten(2).transpose(1, 2)  # [B, h*w, C*L]
        tokens = torch.cat([self.start.expand(b, 1, -1), self.embed(pixels[:, :-1])], dim=1)
        tokens = tokens + (self.rows.view(h, 1, -1) + self.cols.view(1, w, -1)).view(1, h * w, -1)
        if self.context is not None:
            tokens = tokens + self.context(context.flatten(2).transpose(1, 2))
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens).transpose(1, 2).reshape(b, -1, h, w)


class MaskedTransformer(SliceDecoder):
    """Masked transformer: causal 1D self-attention over the slice's pixels, channels R -> G -> B in the head."""

    Options = MaskedTransformerOptions
    pixel_orders = ("raster", "sequence")

    def __init__(self, options: MaskedTransformerOptions, spec: SliceSpec) -> None:
        super().__init__(options, spec)
        d, c, levels = options.channels, spec.channels, spec.levels
        self.attention = PixelAttention(options, spec)
        # the current pixel's earlier channels enter the head of channel c through a masked embedding
        self.within = nn.Linear(c * levels, c * d, bias=False)
        earlier = (torch.arange(c * d) // d).view(-1, 1) > (torch.arange(c * levels) // levels).view(1, -1)
        self.register_buffer("within_mask", earlier.float())
        self.channel = nn.Parameter(torch.zeros(c, d))
        self.head = nn.Sequential(nn.GELU(), nn.Linear(d, d), nn.GELU(), nn.Linear(d, levels))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, L, C, h, w]`` one-hot, context ``[B, D, h, w]`` -> logits ``[B, L, C, h, w]``."""
        b, levels, c, h, w = x.shape
        features = self.attention(x, context).flatten(2).transpose(1, 2)  # [B, h*w, D]
        pixels = pixels_as_features(x).flatten(2).transpose(1, 2)
        within = nn.functional.linear(pixels, self.within.weight * self.within_mask).view(b, h * w, c, -1)
        logits = self.head(features.unsqueeze(2) + within + self.channel)  # [B, h*w, C, L]
        return logits.permute(0, 3, 2, 1).reshape(b, levels, c, h, w)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, context: torch.Tensor | None = None, temperature: float = 1.0,
               given: torch.Tensor | None = None) -> torch.Tensor:
        """Fast path: one attention step per pixel over cached keys and values."""
        inputs = PixelInputs(self.spec, noise)
        cache = _TransformerCache(self, inputs, context)
        return sample_slice(self, cache, inputs, noise, temperature, given, cache.start_pixel)


def _previous_pixel(inputs: PixelInputs, row: int, col: int) -> torch.Tensor | None:
    """One-hot features ``[B, C*L]`` of the pixel before (row, col) in raster order."""
    width = inputs.features.shape[3]
    position = row * width + col
    if position == 0:
        return None
    return inputs.features[:, :, (position - 1) // width, (position - 1) % width]


class _TransformerCache:
    """Incremental ``MaskedTransformer``: features once per pixel, the head once per channel."""

    def __init__(self, model: MaskedTransformer, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        spec = model.spec
        self.model, self.inputs = model, inputs
        self.attention = AttentionCache(model.attention, inputs.features.shape[0], spec.height * spec.width,
                                        inputs.features, context)
        self.features = None

    def start_pixel(self, row: int, col: int) -> None:
        position = row * self.model.spec.width + col
        self.features = self.attention.step(position, _previous_pixel(self.inputs, row, col))

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        model = self.model
        b = self.features.shape[0]
        pixel = self.inputs.features[:, :, row, col]
        within = F.linear(pixel, model.within.weight * model.within_mask).view(b, model.spec.channels, -1)
        return model.head(self.features.unsqueeze(1) + within + model.channel).transpose(1, 2)

    def finish_row(self, row: int) -> None:
        """Nothing to do: attention caches grow pixel by pixel."""


@attrs.frozen
class HybridOptions:
    transformer: MaskedTransformerOptions = attrs.field(factory=MaskedTransformerOptions)
    pixelcnn: GatedPixelCNNOptions = attrs.field(factory=GatedPixelCNNOptions)


class Hybrid(SliceDecoder):
    """SPN decoder: masked transformer features + context map, as conditioning of a Gated PixelCNN."""

    Options = HybridOptions

    def __init__(self, options: HybridOptions, spec: SliceSpec) -> None:
        super().__init__(options, spec)
        self.attention = PixelAttention(options.transformer, spec)
        inner = attrs.evolve(spec, context_channels=spec.context_channels + options.transformer.channels)
        self.pixelcnn = GatedPixelCNN(options.pixelcnn, inner)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, L, C, h, w]`` one-hot, context ``[B, D, h, w]`` -> logits ``[B, L, C, h, w]``."""
        features = self.attention(x, context)
        conditioning = features if context is None else torch.cat([features, context], dim=1)
        return self.pixelcnn(x, conditioning)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, context: torch.Tensor | None = None, temperature: float = 1.0,
               given: torch.Tensor | None = None) -> torch.Tensor:
        """Fast path: a cached attention step per pixel feeds the cached Gated PixelCNN."""
        spec = self.spec
        b = noise.shape[0]
        inputs = PixelInputs(spec, noise)
        d = self.attention.start.shape[0]
        conditioning = noise.new_zeros(b, d + spec.context_channels, spec.height, spec.width)
        if context is not None:
            conditioning[:, d:] = context
        gated = GatedCache(self.pixelcnn, inputs, conditioning)
        attention = AttentionCache(self.attention, b, spec.height * spec.width, noise, context)

        def start_pixel(row: int, col: int) -> None:
            position = row * spec.width + col
            conditioning[:, :d, row, col] = attention.step(position, _previous_pixel(inputs, row, col))

        return sample_slice(self, gated, inputs, noise, temperature, given, start_pixel)


@hookimpl
def spnkit_register_decoders(register):
    register("masked_transformer", MaskedTransformer)
    register("hybrid", Hybrid)
