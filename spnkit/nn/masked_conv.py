"""Convolutions masked over pixels and over channels (R -> G -> B).

Feature maps are split into one group per image channel: with ``n`` features in ``chunks``
equal parts (tanh x sigmoid gates come in two, LSTM gates in four), feature ``k`` of a part
belongs to group ``k * C // part``. At the centre tap, mask A lets group ``c`` see input
groups ``< c``, mask B groups ``<= c``; taps before the centre (rows above, columns to the
left) are open, taps after it closed.

For incremental sampling, ``at_pixel`` and ``at_row`` compute one pixel or one row of a
layer's output from the inputs around it only (equal to ``forward``'s up to rounding).
"""

from __future__ import annotations

import torch
from torch import nn

from spnkit.core.interfaces import SliceSpec


def channel_groups(features: int, channels: int, chunks: int = 1) -> torch.Tensor:
    """``[features]`` long: the image channel each feature belongs to."""
    part = features // chunks
    return torch.arange(features) % part * channels // part


def causal_mask(out_groups: torch.Tensor, in_groups: torch.Tensor, kernel: tuple[int, int], mask_type: str) -> torch.Tensor:
    """``[out, in, kh, kw]`` float mask for a kernel centred at ``(kh // 2, kw // 2)``."""
    kh, kw = kernel
    mask = torch.zeros(len(out_groups), len(in_groups), kh, kw)
    mask[:, :, : kh // 2] = 1
    mask[:, :, kh // 2, : kw // 2] = 1
    allowed = in_groups.view(1, -1) < out_groups.view(-1, 1)
    if mask_type == "B":
        allowed = in_groups.view(1, -1) <= out_groups.view(-1, 1)
    mask[:, :, kh // 2, kw // 2] = allowed.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A same-size convolution whose weights are masked by ``causal_mask``.

    ``x [B, in, h, w]`` -> ``[B, out, h, w]``.
    """

    def __init__(self, in_features: int, out_features: int, kernel: tuple[int, int], channels: int,
                 mask_type: str, in_chunks: int = 1, out_chunks: int = 1) -> None:
        super().__init__(in_features, out_features, kernel, padding=(kernel[0] // 2, kernel[1] // 2))
        mask = causal_mask(channel_groups(out_features, channels, out_chunks),
                           channel_groups(in_features, channels, in_chunks), kernel, mask_type)
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)

    def at_pixel(self, x: torch.Tensor, row: int, col: int) -> torch.Tensor:
        """``forward(x)[:, :, row, col]`` from the kernel-sized window of ``x [B, in, h, w]``
        around (row, col) only: ``[B, out]``."""
        (pad_h, pad_w), (height, width) = self.padding, x.shape[2:]
        window = x[:, :, max(row - pad_h, 0) : row + pad_h + 1, max(col - pad_w, 0) : col + pad_w + 1]
        window = nn.functional.pad(window, (max(pad_w - col, 0), max(col + pad_w + 1 - width, 0),
                                            max(pad_h - row, 0), max(row + pad_h + 1 - height, 0)))
        return nn.functional.conv2d(window, self.weight * self.mask, self.bias)[:, :, 0, 0]

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """A 1x1 kernel applied to one pixel's features: ``x [B, in]`` -> ``[B, out]``."""
        return nn.functional.linear(x, self.weight[:, :, 0, 0] * self.mask[:, :, 0, 0], self.bias)


class HorizontalConv(nn.Module):
    """The gated PixelCNN's horizontal-stack convolution: ``1 x (k//2 + 1)`` over the current
    pixel and the ``k//2`` to its left, the current pixel masked by channel group (A or B).

    ``x [B, in, h, w]`` -> ``[B, out, h, w]``.
    """

    def __init__(self, in_features: int, out_features: int, filter_size: int, channels: int, mask_type: str,
                 in_chunks: int = 1, out_chunks: int = 1) -> None:
        super().__init__()
        self.reach = filter_size // 2
        self.conv = nn.Conv2d(in_features, out_features, (1, self.reach + 1))
        mask = causal_mask(channel_groups(out_features, channels, out_chunks),
                           channel_groups(in_features, channels, in_chunks), (1, 2 * self.reach + 1), mask_type)
        self.register_buffer("mask", mask[..., : self.reach + 1].contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, (self.reach, 0, 0, 0))
        return nn.functional.conv2d(x, self.conv.weight * self.mask, self.conv.bias)

    def at_pixel(self, x: torch.Tensor, row: int, col: int) -> torch.Tensor:
        """``forward(x)[:, :, row, col]`` from the pixel and the ``k//2`` to its left only:
        ``x [B, in, h, w]`` -> ``[B, out]``."""
        window = x[:, :, row, max(col - self.reach, 0) : col + 1]
        window = nn.functional.pad(window, (self.reach + 1 - window.shape[-1], 0)).unsqueeze(2)
        return nn.functional.conv2d(window, self.conv.weight * self.mask, self.conv.bias)[:, :, 0, 0]


class VerticalConv(nn.Conv2d):
    """The gated PixelCNN's vertical-stack convolution: ``(k//2 + 1) x k`` over the current row
    and the ``k//2`` rows above it. Its output must be shifted down a row (``shift_down``)
    before it reaches the horizontal stack.

    ``x [B, in, h, w]`` -> ``[B, out, h, w]``.
    """

    def __init__(self, in_features: int, out_features: int, filter_size: int) -> None:
        super().__init__(in_features, out_features, (filter_size // 2 + 1, filter_size))
        self.reach = filter_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.pad(x, (self.reach, self.reach, self.reach, 0)))

    def at_row(self, x: torch.Tensor, row: int) -> torch.Tensor:
        """``forward(x)[:, :, row]`` from the row and the ``k//2`` above it only:
        ``x [B, in, h, w]`` -> ``[B, out, w]``."""
        rows = x[:, :, max(row - self.reach, 0) : row + 1]
        rows = nn.functional.pad(rows, (self.reach, self.reach, self.reach + 1 - rows.shape[2], 0))
        return super().forward(rows)[:, :, 0]


class Conv1x1(nn.Conv2d):
    """An unmasked 1x1 convolution (``nn.Conv2d(in, out, 1)``) that can also be applied to
    one pixel's features."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, 1)

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in]`` -> ``[B, out]``."""
        return nn.functional.linear(x, self.weight[:, :, 0, 0], self.bias)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """``[B, F, h, w]``: row ``y`` of the result is row ``y - 1`` of ``x`` (zeros on top)."""
    return nn.functional.pad(x, (0, 0, 1, 0))[:, :, :-1]


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


def check_channel_groups(spec: SliceSpec, **features: int) -> None:
    """Raise ``ValueError`` unless each named width gives every colour channel a group."""
    for name, count in features.items():
        if count < spec.channels:
            raise ValueError(f"{name} ({count}) must be at least the image channels ({spec.channels}): "
                             "each colour channel needs its own group of features")
