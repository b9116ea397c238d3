"""A Gated PixelCNN written as the paper describes it and as public PyTorch versions commonly
write it, independent of spnkit: the yardstick ``bench/throughput.py --gated`` times spnkit's
gated PixelCNN against (same depth, width, filter size, skip width and 256-way output).

van den Oord et al. 2016c, "Conditional Image Generation with PixelCNN Decoders": a vertical
stack (a ``(k//2 + 1) x k`` convolution over the rows above, shifted down one row before it
feeds the horizontal stack) and a horizontal stack (a ``1 x (k//2 + 1)`` convolution over the
pixels to the left, the first layer excluding the pixel itself); ``tanh * sigmoid`` gates; a
residual on the horizontal stack from the second layer on; skips summed into a two-layer 1x1
head. The input is an embedding of the pixel's level, as most public versions do.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedBlock(nn.Module):
    def __init__(self, features: int, skip: int, kernel: int, first: bool) -> None:
        super().__init__()
        self.reach, self.first = kernel // 2, first
        self.vertical = nn.Conv2d(features, 2 * features, (self.reach + 1, kernel))
        self.horizontal = nn.Conv2d(features, 2 * features, (1, self.reach + 1))
        self.vertical_to_horizontal = nn.Conv2d(2 * features, 2 * features, 1)
        self.residual = nn.Conv2d(features, features, 1)
        self.skip = nn.Conv2d(features, skip, 1)

    def forward(self, v: torch.Tensor, h: torch.Tensor):
        height, width = v.shape[-2:]
        # rows above and the pixel's own row: padded on top, cropped back to the image
        v_pre = self.vertical(F.pad(v, (self.reach, self.reach, self.reach, 0)))
        # the row above only: shift down one row
        from_above = F.pad(v_pre, (0, 0, 1, 0))[:, :, :height]
        # pixels to the left and the pixel itself; the first layer must not see the pixel
        h_in = F.pad(h, (self.reach + 1, 0, 0, 0))[..., : width + self.reach] if self.first else F.pad(h, (self.reach, 0, 0, 0))
        h_pre = self.horizontal(h_in) + self.vertical_to_horizontal(from_above)
        gated = gate(h_pre)
        h_out = gated if self.first else h + self.residual(gated)
        return gate(v_pre), h_out, self.skip(gated)


class TextbookGatedPixelCNN(nn.Module):
    """``images [B, 1, H, W]`` long in ``[0, levels)`` -> logits ``[B, levels, H, W]``."""

    def __init__(self, layers: int, features: int, skip: int, kernel: int = 3, levels: int = 256) -> None:
        super().__init__()
        self.embedding = nn.Embedding(levels, features)
        self.blocks = nn.ModuleList(GatedBlock(features, skip, kernel, first=i == 0) for i in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(skip, skip, 1), nn.ReLU(), nn.Conv2d(skip, levels, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embedding(images[:, 0]).permute(0, 3, 1, 2)
        v, h, skips = x, x, 0
        for block in self.blocks:
            v, h, skip = block(v, h)
            skips = skips + skip
        return self.head(skips)

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(images), images[:, 0])
