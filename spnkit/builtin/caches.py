"""Cached incremental evaluation for fast sampling: each new subpixel computes only what it
needs, reusing everything computed for the subpixels before it.

* ``GatedCache``: the Gated PixelCNN's vertical stack once per finished row, the horizontal
  stack at the current pixel from a ``1 x (k//2 + 1)`` window of cached features.
* ``MaskedConvCache``: a stack of masked convolutions evaluated at one pixel from ``k x k``
  windows of cached feature maps (the plain PixelCNN).
* ``AttentionCache``: key/value caches for the causal pixel attention, one token per pixel.

The caches use the modules' own weights, so fast and reference paths compute the same
logits up to floating-point rounding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def masked_linear(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A masked 1x1 convolution applied to ``x [B, in]`` -> ``[B, out]``."""
    return F.linear(x, conv.weight[:, :, 0, 0] * conv.mask[:, :, 0, 0], conv.bias)


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """An unmasked 1x1 convolution applied to ``x [B, in]`` -> ``[B, out]``."""
    return F.linear(x, conv.weight[:, :, 0, 0], conv.bias)


def gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class PixelInputs:
    """The one-hot slice being sampled, as channel-major features ``[B, C*L, h, w]``."""

    def __init__(self, spec, noise: torch.Tensor) -> None:
        """``spec``: the decoder's ``SliceSpec``; ``noise``: its ``[B, L, C, h, w]`` Gumbel noise."""
        self.levels = spec.levels
        self.features = noise.new_zeros(noise.shape[0], spec.channels * spec.levels, spec.height, spec.width)

    def set(self, row: int, col: int, channel: int, value: torch.Tensor) -> None:
        block = self.features[:, channel * self.levels : (channel + 1) * self.levels, row, col]
        block.zero_()
        block.scatter_(1, value.view(-1, 1), 1.0)


def head_logits(head: nn.Module, skip: torch.Tensor, levels: int) -> torch.Tensor:
    """``MaskedHead`` at one pixel: ``[B, R]`` -> logits ``[B, L, C]``."""
    hidden = masked_linear(head.hidden, torch.relu(skip))
    out = masked_linear(head.out, torch.relu(hidden))
    return out.view(out.shape[0], -1, levels).transpose(1, 2)


class GatedCache:
    """Incremental Gated PixelCNN (``spnkit.builtin.pixelcnn.GatedPixelCNN``)."""

    def __init__(self, model: nn.Module, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        self.model, self.inputs = model, inputs
        b, _, height, width = inputs.features.shape
        spec = model.spec
        self.reach = model.options.filter_size // 2
        features = model.options.channels
        new = inputs.features.new_zeros
        self.h = [new(b, features, height, width) for _ in model.layers]
        self.v = [new(b, features, height, width) for _ in model.layers]
        self.v_pre = [new(b, 2 * features, height, width) for _ in model.layers]
        self.context = context if context is not None else (new(b, spec.context_channels, height, width)
                                                            if spec.context_channels else None)

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        """Logits ``[B, L, C]`` of pixel (row, col) given everything set so far."""
        r = self.reach
        previous = self.inputs.features
        skip = 0
        for index, layer in enumerate(self.model.layers):
            window = previous[:, :, row, max(col - r, 0) : col + 1]
            window = F.pad(window, (r + 1 - window.shape[-1], 0)).unsqueeze(2)
            horizontal = layer.horizontal
            h_pre = F.conv2d(window, horizontal.conv.weight * horizontal.mask, horizontal.conv.bias)[:, :, 0, 0]
            above = self.v_pre[index][:, :, row - 1, col] if row else torch.zeros_like(h_pre)
            h_pre = h_pre + pointwise(layer.vertical_to_horizontal, above)
            if layer.context is not None:
                h_pre = h_pre + pointwise(layer.context, self.context[:, :, row, col]).chunk(2, dim=1)[1]
            gated = gate(h_pre)
            out = gated if layer.residual is None else previous[:, :, row, col] + masked_linear(layer.residual, gated)
            skip = skip + masked_linear(layer.skip, gated)
            self.h[index][:, :, row, col] = out
            previous = self.h[index]
        return head_logits(self.model.head, skip, self.model.spec.levels)

    def finish_row(self, row: int) -> None:
        """Run the vertical stack over a completed row (the next row reads it, shifted)."""
        r = self.reach
        previous = self.inputs.features
        for index, layer in enumerate(self.model.layers):
            rows = previous[:, :, max(row - r, 0) : row + 1]
            rows = F.pad(rows, (r, r, r + 1 - rows.shape[2], 0))
            v_pre = F.conv2d(rows, layer.vertical.weight, layer.vertical.bias)[:, :, 0]  # [B, 2F, w]
            self.v_pre[index][:, :, row] = v_pre
            if layer.context is not None:
                context = layer.context(self.context[:, :, row : row + 1])[:, :, 0]
                v_pre = v_pre + context.chunk(2, dim=1)[0]
            self.v[index][:, :, row] = gate(v_pre)
            previous = self.v[index]


class MaskedConvCache:
    """Incremental plain PixelCNN (``spnkit.builtin.pixelcnn.PixelCNN``): each layer at one
    pixel from a ``k x k`` window of the cached, zero-padded maps of the layer below."""

    def __init__(self, model: nn.Module, inputs: PixelInputs, context: torch.Tensor | None) -> None:
        self.model, self.inputs, self.context = model, inputs, context
        b, _, height, width = inputs.features.shape
        self.pad = 3  # the 7x7 input layer's reach; the 3x3 layers need 1
        features = model.options.channels
        self.maps = [inputs.features.new_zeros(b, features, height + 2, width + 2) for _ in range(len(model.layers) + 1)]

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        model = self.model
        padded = F.pad(self.inputs.features[:, :, max(row - 3, 0) : row + 1], (3, 3, 0, 0))
        padded = F.pad(padded, (0, 0, 4 - padded.shape[2], 3))  # rows row-3 .. row+3 (below: masked)
        window = padded[:, :, :, col : col + 7]
        h = F.conv2d(window, model.first.weight * model.first.mask, model.first.bias)[:, :, 0, 0]
        if model.context is not None:
            h = h + pointwise(model.context, self.context[:, :, row, col])
        self.maps[0][:, :, row + 1, col + 1] = h
        for index, layer in enumerate(model.layers):
            window = torch.relu(self.maps[index][:, :, row : row + 3, col : col + 3])
            h = h + F.conv2d(window, layer.weight * layer.mask, layer.bias)[:, :, 0, 0]
            self.maps[index + 1][:, :, row + 1, col + 1] = h
        hidden = masked_linear(model.head.hidden, torch.relu(h))
        out = masked_linear(model.head.out, torch.relu(hidden))
        return out.view(out.shape[0], -1, model.spec.levels).transpose(1, 2)

    def finish_row(self, row: int) -> None:
        """Nothing to do: every layer is computed pixel by pixel."""


class AttentionCache:
    """Key/value caches for ``spnkit.builtin.transformer.PixelAttention``: ``step`` computes the
    features of the next pixel from the pixel before it."""

    def __init__(self, attention: nn.Module, batch: int, length: int, like: torch.Tensor,
                 context: torch.Tensor | None) -> None:
        self.attention = attention
        self.context = None if context is None else context.flatten(2).transpose(1, 2)  # [B, T, Dc]
        d = attention.start.shape[0]
        heads = attention.blocks[0].attention.heads if len(attention.blocks) else 1
        self.keys = [like.new_zeros(batch, heads, length, d // heads) for _ in attention.blocks]
        self.values = [like.new_zeros(batch, heads, length, d // heads) for _ in attention.blocks]
        self.width = attention.cols.shape[0]

    def step(self, position: int, previous_pixel: torch.Tensor | None) -> torch.Tensor:
        """Features ``[B, D]`` at ``position``; ``previous_pixel [B, C*L]`` one-hot of the pixel
        before it (None at position 0)."""
        a = self.attention
        batch = self.keys[0].shape[0] if self.keys else previous_pixel.shape[0]
        token = a.start.expand(batch, -1) if previous_pixel is None else a.embed(previous_pixel)
        token = token + a.rows[position // self.width] + a.cols[position % self.width]
        if a.context is not None:
            token = token + a.context(self.context[:, position])
        x = token.unsqueeze(1)  # [B, 1, D]
        for index, block in enumerate(a.blocks):
            attention = block.attention
            b, _, d = x.shape
            q, k, v = attention.qkv(block.attention_norm(x)).view(b, 1, 3, attention.heads, -1).permute(2, 0, 3, 1, 4)
            self.keys[index][:, :, position] = k[:, :, 0]
            self.values[index][:, :, position] = v[:, :, 0]
            y = F.scaled_dot_product_attention(q, self.keys[index][:, :, : position + 1],
                                               self.values[index][:, :, : position + 1])
            x = x + attention.out(y.transpose(1, 2).reshape(b, 1, d))
            x = x + block.feed_forward(block.ff_norm(x))
        return a.norm(x)[:, 0]


def sample_slice(decoder: nn.Module, cache, inputs: PixelInputs, noise: torch.Tensor, temperature: float,
                 given: torch.Tensor | None, start_pixel=None) -> torch.Tensor:
    """Draw a slice subpixel by subpixel through ``cache`` (``pixel_logits(row, col)``,
    ``finish_row(row)``), with the same noise and draws as ``SliceDecoder.sample_reference``.
    ``start_pixel(row, col)`` runs once before each pixel's channels."""
    from spnkit.core import sampling

    spec = decoder.spec
    x = torch.zeros(noise.shape[0], spec.channels, spec.height, spec.width, dtype=torch.long, device=noise.device)
    for row in range(spec.height):
        for col in range(spec.width):
            if start_pixel is not None:
                start_pixel(row, col)
            for channel in range(spec.channels):
                logits = cache.pixel_logits(row, col)
                drawn = sampling.draw(logits[:, :, channel], noise[:, :, channel, row, col], temperature)
                value = sampling.keep_given(drawn, given, (channel, row, col))
                x[:, channel, row, col] = value
                inputs.set(row, col, channel, value)
        cache.finish_row(row)
    return x
