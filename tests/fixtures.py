"""Components for tests only: a dense masked decoder whose causality is easy to break on purpose,
and an ordering that drops a pixel."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from spnkit.builtin.orderings import SubscaleOrdering
from spnkit.core.interfaces import ContextEncoder, SliceDecoder


@attrs.frozen
class DenseOptions:
    leak: bool = False


class DenseMaskedDecoder(SliceDecoder):
    """Logits of subpixel t are a masked linear function of all subpixels before t (MADE-style)."""

    Options = DenseOptions

    def __init__(self, options, spec):
        super().__init__(options, spec)
        count = spec.channels * spec.height * spec.width
        self.weight = nn.Parameter(torch.randn(count, spec.levels, count, spec.levels) * 0.3)
        self.bias = nn.Parameter(torch.randn(count, spec.levels) * 0.3)
        self.context = nn.Linear(max(spec.context_channels, 1), spec.levels)
        order = torch.arange(count)
        # mask[t, s] = 1 when input s may influence output t
        mask = order.view(-1, 1) > order.view(1, -1)
        if options.leak:
            mask = order.view(-1, 1) >= order.view(1, -1)
        self.register_buffer("mask", mask.float())

    def forward(self, x, context=None):
        spec = self.spec
        b = x.shape[0]
        # [B, L, C, h, w] -> [B, count(raster then channel), L]
        flat = x.permute(0, 3, 4, 2, 1).reshape(b, -1, spec.levels)
        weight = self.weight * self.mask.view(*self.mask.shape[:1], 1, self.mask.shape[1], 1)
        logits = torch.einsum("tlsk,bsk->btl", weight, flat) + self.bias
        if context is not None:
            ctx = context.permute(0, 2, 3, 1)  # [B, h, w, D]
            extra = self.context(ctx).unsqueeze(3).expand(-1, -1, -1, spec.channels, -1)
            logits = logits + extra.reshape(b, -1, spec.levels)
        return logits.view(b, spec.height, spec.width, spec.channels, spec.levels).permute(0, 4, 3, 1, 2)


class DroppingOrdering(SubscaleOrdering):
    """A broken subscale ordering: the last slice loses its first pixel (it repeats its second)."""

    def to_slices(self, x):
        out = super().to_slices(x).clone()
        out[:, -1, :, 0, 0] = out[:, -1, :, 0, 1]
        return out


@attrs.frozen
class DenseEncoderOptions:
    channels: int = 3
    leak: bool = False


class DenseEncoder(ContextEncoder):
    """Context = a linear map of the slices before the target (and the conditioning image)."""

    Options = DenseEncoderOptions

    def __init__(self, options, spec):
        super().__init__(options, spec)
        n, size = spec.num_slices, spec.channels * spec.height * spec.width
        self.own = nn.Linear(n * spec.levels * size, options.channels * spec.height * spec.width)
        self.cond = nn.Linear(n * max(spec.cond_levels, 1) * size, options.channels * spec.height * spec.width)
        self.position = nn.Embedding(n, options.channels)

    @property
    def out_channels(self):
        return self.options.channels

    def forward(self, slices, target, cond=None):
        spec = self.spec
        b, n = slices.shape[:2]
        index = torch.arange(n, device=slices.device)
        visible = index.view(1, n) <= target.view(b, 1) if self.options.leak else index.view(1, n) < target.view(b, 1)
        out = self.own((slices * visible.view(b, n, 1, 1, 1, 1)).reshape(b, -1))
        if cond is not None:
            out = out + self.cond(cond.reshape(b, -1))
        out = out.view(b, self.options.channels, spec.height, spec.width)
        return out + self.position(target).view(b, -1, 1, 1)
