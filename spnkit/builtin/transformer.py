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
from spnkit.nn.attention import KVCache, TransformerBlock
from spnkit.nn.gated import GatedPixelCNN, GatedPixelCNNOptions
from spnkit.nn.masked_conv import pixels_as_features


@attrs.frozen
class MaskedTransformerOptions:
    layers: int = attrs.field(default=2, validator=up_to(256))
    heads: int = attrs.field(default=4, validator=divides("channels"))
    channels: int = attrs.field(default=64, validator=up_to(16384))
    ff_multiplier: int = attrs.field(default=4, validator=up_to(64))


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

    def kv_caches(self, batch: int, like: torch.Tensor) -> list[KVCache]:
        """Empty key/value caches of every block for ``step``, for a whole slice of pixels."""
        length = self.rows.shape[0] * self.cols.shape[0]
        return [block.attention.kv_cache(batch, length, like) for block in self.blocks]

    def step(self, pixels: torch.Tensor, row: int, col: int, context: torch.Tensor | None,
             caches: list[KVCache]) -> torch.Tensor:
        """``forward`` at pixel (row, col) alone, from the ``caches`` of the pixels before it
        (this pixel's keys and values are added).

        pixels: ``[B, C*L, h, w]`` one-hot channel-major, read at the pixel before (row, col);
        context: ``[B, D_ctx, h, w]`` or None. Returns ``[B, D]``.
        """
        width = self.cols.shape[0]
        position = row * width + col
        if position:
            token = self.embed(pixels[:, :, (position - 1) // width, (position - 1) % width])
        else:
            token = self.start.expand(pixels.shape[0], -1)
        token = token + self.rows[row] + self.cols[col]
        if self.context is not None:
            token = token + self.context(context[:, :, row, col])
        x = token.unsqueeze(1)  # [B, 1, D]
        for block, cache in zip(self.blocks, caches):
            x = block.step(x, cache, position)
        return self.norm(x)[:, 0]


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

    def channel_logits(self, features: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """The head: attention features ``[..., D]`` and the pixels' one-hot ``[..., C*L]``
        (only channels before each head's are read) -> logits ``[..., C, L]``."""
        within = nn.functional.linear(pixels, self.within.weight * self.within_mask)
        within = within.unflatten(-1, (self.spec.channels, -1))
        return self.head(features.unsqueeze(-2) + within + self.channel)

    def sampling_cache(self, inputs: PixelInputs, context: torch.Tensor | None) -> SliceCache:
        return _MaskedTransformerCache(self, inputs, context)


class _MaskedTransformerCache(SliceCache):
    """Incremental ``MaskedTransformer``: one attention step per pixel over cached keys and
    values, the head once per channel."""

    def __init__(self, model: MaskedTransformer, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        self.model, self.inputs, self.context = model, inputs, context
        self.caches = model.attention.kv_caches(inputs.features.shape[0], like=inputs.features)
        self.features = None  # [B, D] at the current pixel

    def start_pixel(self, row: int, col: int) -> None:
        self.features = self.model.attention.step(self.inputs.features, row, col, self.context, self.caches)

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        return self.model.channel_logits(self.features, self.inputs.features[:, :, row, col]).transpose(1, 2)


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

    def sampling_cache(self, inputs: PixelInputs, context: torch.Tensor | None) -> SliceCache:
        return _HybridCache(self, inputs, context)


class _HybridCache(SliceCache):
    """Incremental ``Hybrid``: a cached attention step per pixel writes its features into the
    conditioning map of the Gated PixelCNN's own cache."""

    def __init__(self, model: Hybrid, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        self.attention, self.inputs, self.context = model.attention, inputs, context
        b, _, height, width = inputs.features.shape
        self.attention_channels = model.options.transformer.channels
        channels = self.attention_channels + model.spec.context_channels
        self.conditioning = inputs.features.new_zeros(b, channels, height, width)  # [attention; context]
        if context is not None:
            self.conditioning[:, self.attention_channels :] = context
        self.caches = model.attention.kv_caches(b, like=inputs.features)
        self.pixelcnn = model.pixelcnn.sampling_cache(inputs, self.conditioning)

    def start_pixel(self, row: int, col: int) -> None:
        features = self.attention.step(self.inputs.features, row, col, self.context, self.caches)
        self.conditioning[:, : self.attention_channels, row, col] = features

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        return self.pixelcnn.pixel_logits(row, col)

    def finish_row(self, row: int) -> None:
        self.pixelcnn.finish_row(row)


@hookimpl
def spnkit_register_decoders(register):
    register("masked_transformer", MaskedTransformer)
    register("hybrid", Hybrid)
