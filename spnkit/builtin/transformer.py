"""The masked transformer decoder and the SPN's hybrid decoder (Menick & Kalchbrenner 2018):
masked 1D self-attention over the flattened slice, reshaped back, concatenated with the
context map and fed to a Gated PixelCNN as its conditioning."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from spnkit.core.hookspecs import hookimpl
from spnkit.core.interfaces import SliceDecoder, SliceSpec
from spnkit.core.sampling import PixelInputs, SliceCache
from spnkit.core.validators import divides, up_to
from spnkit.nn.attention import TransformerBlock
from spnkit.nn.gated import GatedPixelCNN, GatedPixelCNNOptions
from spnkit.nn.masked_conv import OneHotTaps, one_hot_conv, pixels_as_features


@attrs.frozen
class MaskedTransformerOptions:
    layers: int = attrs.field(default=2, validator=up_to(256), metadata={"doc": "masked self-attention layers"})
    heads: int = attrs.field(default=4, validator=divides("channels"), metadata={"doc": "attention heads"})
    channels: int = attrs.field(default=64, validator=up_to(16384), metadata={"doc": "attention features"})
    ff_multiplier: int = attrs.field(default=4, validator=up_to(64),
                                   metadata={"doc": "feed-forward width as a multiple of channels"})


class PixelAttention(nn.Module):
    """Causal self-attention over a slice's pixels in raster order: the features at pixel p
    depend only on pixels before p (inputs are shifted right by one pixel behind a learned
    start token), plus learned row and column embeddings and the context map."""

    def __init__(self, options: MaskedTransformerOptions, spec: SliceSpec) -> None:
        super().__init__()
        d = options.channels
        self.levels = spec.levels
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
        pixels = pixels_as_features(x).flatten(2).transpose(1, 2)  # [B, h*w, C*L]
        return self._attend(self.embed(pixels[:, :-1]), context, *x.shape[-2:])

    def forward_levels(self, levels: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``forward`` of the one-hot of ``levels [B, C, h, w]`` long, the embedding by ``one_hot_conv``."""
        weight = self.embed.weight.view(*self.embed.weight.shape, 1, 1)
        embedded = one_hot_conv(levels, self.levels, weight, self.embed.bias, (0, 0, 0, 0))  # channels-last
        return self._attend(embedded.flatten(2).transpose(1, 2)[:, :-1], context, *levels.shape[-2:])

    def _attend(self, embedded: torch.Tensor, context: torch.Tensor | None, h: int, w: int) -> torch.Tensor:
        """The embeddings ``[B, h*w - 1, D]`` of every pixel but the last, shifted behind the start
        token -> features ``[B, D, h, w]``."""
        b = embedded.shape[0]
        tokens = torch.cat([self.start.expand(b, 1, -1), embedded], dim=1)
        tokens = tokens + (self.rows.view(h, 1, -1) + self.cols.view(1, w, -1)).view(1, h * w, -1)
        if self.context is not None:
            tokens = tokens + self.context(context.flatten(2).transpose(1, 2))
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens).transpose(1, 2).reshape(b, -1, h, w)


class _AttentionSteps:
    """``PixelAttention`` one pixel at a time while a slice is sampled: ``step(row, col)`` is
    ``forward`` at pixel (row, col) alone, ``[B, D]``, from the pixels before it, over cached
    keys and values. What a token adds besides its pixel (the row and column embeddings, the
    context's projection) is computed for the whole slice at once, as ``forward`` does."""

    def __init__(self, attention: PixelAttention, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        self.attention, self.pixels = attention, inputs.features
        b, _, height, self.width = inputs.features.shape
        self.positions = (attention.rows.view(height, 1, -1) + attention.cols.view(1, self.width, -1)).flatten(0, 1)
        self.context = None  # [B, h*w, D]
        if attention.context is not None:
            self.context = attention.context(context.flatten(2).transpose(1, 2))
        self.caches = [block.attention.kv_cache(b, height * self.width, like=inputs.features)
                       for block in attention.blocks]

    def step(self, row: int, col: int) -> torch.Tensor:
        attention, position = self.attention, row * self.width + col
        if position:
            token = attention.embed(self.pixels[:, :, (position - 1) // self.width, (position - 1) % self.width])
        else:
            token = attention.start.expand(self.pixels.shape[0], -1)
        token = token + self.positions[position]
        if self.context is not None:
            token = token + self.context[:, position]
        x = token.unsqueeze(1)  # [B, 1, D]
        for block, cache in zip(attention.blocks, self.caches):
            x = block.step(x, cache, position)
        return attention.norm(x)[:, 0]


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
        logits = self.channel_logits(features, pixels)  # [B, h*w, C, L]
        return logits.permute(0, 3, 2, 1).reshape(b, levels, c, h, w)

    def forward_levels(self, levels: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``forward`` of the one-hot of ``levels [B, C, h, w]`` long, the embeddings by
        ``one_hot_conv``: logits ``[B, L, C, h, w]``, laid out as ``[B, h, w, C, L]``."""
        b, c, h, w = levels.shape
        features = self.attention.forward_levels(levels, context).flatten(2).transpose(1, 2)  # [B, h*w, D]
        weight = self.within.weight * self.within_mask
        within = one_hot_conv(levels, self.spec.levels, weight.view(*weight.shape, 1, 1), None, (0, 0, 0, 0))
        logits = self._logits(features, within.flatten(2).transpose(1, 2))  # [B, h*w, C, L]
        return logits.permute(0, 3, 2, 1).reshape(b, -1, c, h, w)

    def channel_logits(self, features: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """The head: attention features ``[..., D]`` and the pixels' one-hot ``[..., C*L]``
        (only channels before each head's are read) -> logits ``[..., C, L]``."""
        return self._logits(features, nn.functional.linear(pixels, self.within.weight * self.within_mask))

    def _logits(self, features: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
        """The head given the masked embedding ``within [..., C*D]`` of the pixel's earlier channels."""
        within = within.unflatten(-1, (self.spec.channels, -1))
        return self.head(features.unsqueeze(-2) + within + self.channel)

    def sampling_cache(self, inputs: PixelInputs, context: torch.Tensor | None) -> SliceCache:
        return _MaskedTransformerCache(self, inputs, context)


class _MaskedTransformerCache(SliceCache):
    """Incremental ``MaskedTransformer``: one attention step per pixel over cached keys and
    values, the head once per channel, which reads the pixel's earlier channels as sums of
    weight rows of their levels (``OneHotTaps``: the masked embedding ``within``, taken once)."""

    def __init__(self, model: MaskedTransformer, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        self.model, self.inputs = model, inputs
        self.attention = _AttentionSteps(model.attention, inputs, context)
        within = model.within.weight * model.within_mask  # [C*D, C*L]
        self.within = [OneHotTaps(weight[:, :, None, None], inputs.levels)
                       for weight in within.split(model.options.channels)]  # per channel: [D, C*L, 1, 1]
        self.features = None  # [B, D] at the current pixel

    def start_pixel(self, row: int, col: int) -> None:
        self.features = self.attention.step(row, col)

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        return torch.stack([self.channel_logits(row, col, c) for c in range(len(self.within))], dim=2)

    def channel_logits(self, row: int, col: int, channel: int) -> torch.Tensor:
        within = self.within[channel](self.inputs.values[:, :, row, col][:, None, None])  # channels after it: 0
        return self.model.head(self.features + within + self.model.channel[channel])


@attrs.frozen
class HybridOptions:
    transformer: MaskedTransformerOptions = attrs.field(factory=MaskedTransformerOptions,
                                                      metadata={"doc": "the masked transformer over the slice's pixels"})
    pixelcnn: GatedPixelCNNOptions = attrs.field(factory=GatedPixelCNNOptions,
                                               metadata={"doc": "the gated PixelCNN conditioned on the transformer's features and the context"})


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

    def forward_levels(self, levels: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``forward`` of the one-hot of ``levels [B, C, h, w]`` long, both first layers reading the levels."""
        features = self.attention.forward_levels(levels, context)
        conditioning = features if context is None else torch.cat([features, context], dim=1)
        return self.pixelcnn.forward_levels(levels, conditioning)

    def sampling_cache(self, inputs: PixelInputs, context: torch.Tensor | None) -> SliceCache:
        return _HybridCache(self, inputs, context)


class _HybridCache(SliceCache):
    """Incremental ``Hybrid``: a cached attention step per pixel writes its features into the
    conditioning map of the Gated PixelCNN's own cache."""

    def __init__(self, model: Hybrid, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        b, _, height, width = inputs.features.shape
        self.attention_channels = model.options.transformer.channels
        channels = self.attention_channels + model.spec.context_channels
        # [attention; context], channels-last: a pixel's conditioning contiguous
        self.conditioning = inputs.features.new_zeros(b, height, width, channels).permute(0, 3, 1, 2)
        if context is not None:
            self.conditioning[:, self.attention_channels :] = context
        self.attention = _AttentionSteps(model.attention, inputs, context)
        self.pixelcnn = model.pixelcnn.sampling_cache(inputs, self.conditioning)

    def start_pixel(self, row: int, col: int) -> None:
        self.conditioning[:, : self.attention_channels, row, col] = self.attention.step(row, col)
        self.pixelcnn.start_pixel(row, col)

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        return self.pixelcnn.pixel_logits(row, col)

    def channel_logits(self, row: int, col: int, channel: int) -> torch.Tensor:
        return self.pixelcnn.channel_logits(row, col, channel)

    def finish_row(self, row: int) -> None:
        self.pixelcnn.finish_row(row)


@hookimpl
def spnkit_register_decoders(register):
    register("masked_transformer", MaskedTransformer)
    register("hybrid", Hybrid)
