"""Convolutions masked over pixels and over channels (R -> G -> B), as PixelRNN needs them.

Feature maps are split into one group per image channel: with ``n`` features in ``chunks``
equal parts (gates come in chunks of four), feature ``k`` of a part belongs to group
``k * C // part``. At the centre tap, mask A lets group ``c`` see input groups ``< c``, mask B
groups ``<= c``; taps before the centre (rows above, columns to the left) are open, taps after
it closed.
"""

from __future__ import annotations

import torch
from torch import nn


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
