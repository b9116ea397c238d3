"""Convolutions masked over pixels and over channels (R -> G -> B).

Feature maps are split into one group per image channel: with ``n`` features in ``chunks``
equal parts (tanh x sigmoid gates come in two, LSTM gates in four), feature ``k`` of a part
belongs to group ``k * C // part``. At the centre tap, mask A lets group ``c`` see input
groups ``< c``, mask B groups ``<= c``; taps before the centre (rows above, columns to the
left) are open, taps after it closed.

For incremental sampling, a masked kernel splits where the pixel being drawn sits
(``centre_tap``, ``left_taps``, ``rows_above``; ``VerticalConv.at_row``): the parts that read
only earlier pixels are computed once per row or pixel, the centre tap once per channel (the
sum equals ``forward``'s up to rounding). A first layer, whose input is one-hot, sums weight
rows picked by the levels instead (``OneHotTaps``).
"""

from __future__ import annotations

import torch
from torch import nn

from spnkit.core.interfaces import SliceSpec, one_hot


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


def one_hot_conv(levels: torch.Tensor, count: int, weight: torch.Tensor, bias: torch.Tensor | None,
                 padding: tuple[int, int, int, int]) -> torch.Tensor:
    """``conv2d`` of the channel-major one-hot of ``levels`` (``[B, C, h, w]`` long in
    ``[0, count)``, laid out as ``pixels_as_features`` does) with ``weight [O, C*count, kh, kw]``
    and ``bias [O]`` or None, the input zero-padded by ``padding`` (left, right, top, bottom):
    ``[B, O, h', w']`` in the weight's dtype, channels-last.

    The same function as the convolution, computed as a gather: a one-hot input selects one
    row of the weight per tap and channel, so each output sums ``kh*kw*C`` rows instead of
    multiplying ``kh*kw*C*count`` inputs. One ``F.embedding`` per tap and channel rather than
    one ``F.embedding_bag``: torch-xla does not lower the latter's training form. Up to 64
    levels the convolution of the one-hot is the cheaper of the two (measured on the CPU), so
    it is what runs.
    """
    if count <= 64:
        x = nn.functional.pad(pixels_as_features(one_hot(levels, count, weight.dtype)), padding)
        return nn.functional.conv2d(x, weight, bias).contiguous(memory_format=torch.channels_last)
    channels, (kh, kw) = levels.shape[1], weight.shape[2:]
    # [taps, C*count + 1, O]: the tap's weights as a table, and a zero row that padding reads
    tables = nn.functional.pad(weight.permute(2, 3, 1, 0), (0, 0, 0, 1)).flatten(0, 1).unbind(0)
    offsets = torch.arange(channels, device=levels.device) * count
    rows = nn.functional.pad((levels + offsets.view(-1, 1, 1)).permute(0, 2, 3, 1), (0, 0, *padding),
                             value=channels * count)  # [B, h + top + bottom, w + left + right, C]
    height, width = rows.shape[1] - kh + 1, rows.shape[2] - kw + 1
    out = None
    for tap, table in enumerate(tables):
        i, j = divmod(tap, kw)
        for c in range(channels):
            part = nn.functional.embedding(rows[:, i : i + height, j : j + width, c], table)  # [B, h', w', O]
            out = part if out is None else out.add_(part)
    if bias is not None:
        out = out.add_(bias)
    return out.permute(0, 3, 1, 2)


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

    def of_levels(self, levels: torch.Tensor, count: int) -> torch.Tensor:
        """``forward`` of the channel-major one-hot of ``levels [B, C, h, w]`` long (``count``
        levels), by ``one_hot_conv`` (a gather for many levels): ``[B, out, h, w]``, channels-last."""
        (pad_h, pad_w) = self.padding
        return one_hot_conv(levels, count, self.weight * self.mask, self.bias, (pad_w, pad_w, pad_h, pad_h))

    def masked_weight(self) -> torch.Tensor:
        """The kernel as ``forward`` applies it, ``[out, in, kh, kw]``."""
        return self.weight * self.mask


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

    def of_levels(self, levels: torch.Tensor, count: int) -> torch.Tensor:
        """``forward`` of the channel-major one-hot of ``levels [B, C, h, w]`` long (``count``
        levels), by ``one_hot_conv`` (a gather for many levels): ``[B, out, h, w]``, channels-last."""
        return one_hot_conv(levels, count, self.conv.weight * self.mask, self.conv.bias, (self.reach, 0, 0, 0))

    def masked_weight(self) -> torch.Tensor:
        """The kernel as ``forward`` applies it, centred: ``[out, in, 1, k]``, zeros right of the centre."""
        return nn.functional.pad(self.conv.weight * self.mask, (0, self.reach))


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

    def of_levels(self, levels: torch.Tensor, count: int) -> torch.Tensor:
        """``forward`` of the channel-major one-hot of ``levels [B, C, h, w]`` long (``count``
        levels), by ``one_hot_conv`` (a gather for many levels): ``[B, out, h, w]``, channels-last."""
        return one_hot_conv(levels, count, self.weight, self.bias, (self.reach, self.reach, self.reach, 0))

    def at_row(self, x: torch.Tensor, row: int) -> torch.Tensor:
        """``forward(x)[:, :, row]`` from the row and the ``k//2`` above it only:
        ``x [B, in, h, w]`` -> ``[B, out, w]``."""
        rows = x[:, :, max(row - self.reach, 0) : row + 1]
        rows = nn.functional.pad(rows, (self.reach, self.reach, self.reach + 1 - rows.shape[2], 0))
        return super().forward(rows)[:, :, 0]


class Conv1x1(nn.Conv2d):
    """An unmasked 1x1 convolution (``nn.Conv2d(in, out, 1)``) that can also be applied to
    features laid out channels-last.

    A map that is one vector per image tiled over space (strides 0 in height and width, as a
    conditioner's ``h`` is given to decoders) is mapped once per image and tiled again: the
    same values, without a convolution and its backward pass over every position (these
    took a third of the training step of a gated PixelCNN given a code)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in, h, w]`` -> ``[B, out, h, w]`` (a tiled view when ``x`` is one)."""
        if x.dim() == 4 and x.stride(2) == 0 and x.stride(3) == 0:
            b, _, height, width = x.shape
            return self.pointwise(x[:, :, 0, 0]).view(b, -1, 1, 1).expand(-1, -1, height, width)
        return super().forward(x)

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in]`` -> ``[..., out]``."""
        return nn.functional.linear(x, self.weight[:, :, 0, 0], self.bias)


def centre_tap(kernel: torch.Tensor) -> torch.Tensor:
    """The centre tap of ``kernel [out, in, kh, kw]`` as a matrix ``[in, out]`` (for ``x @ it``;
    the transpose of a contiguous ``[out, in]``, which matrix products read without a copy)."""
    kh, kw = kernel.shape[2:]
    return kernel[:, :, kh // 2, kw // 2].contiguous().t()


def left_taps(kernel: torch.Tensor, columns: int) -> torch.Tensor:
    """The taps of ``kernel [out, in, kh, kw]`` on the ``columns`` pixels left of its centre, in
    the centre's row, as a matrix ``[columns*in, out]`` for inputs laid out pixel by pixel,
    leftmost first (``[B, columns, in]`` flattened)."""
    kh, kw = kernel.shape[2:]
    taps = kernel[:, :, kh // 2, kw // 2 - columns : kw // 2]  # [out, in, columns]
    return taps.permute(2, 1, 0).reshape(-1, kernel.shape[0]).contiguous()


class OneHotTaps:
    """Taps ``kernel [O, C*L, kh, kw]`` of a convolution over the channel-major one-hot of
    levels (a first layer), applied to the levels themselves by summing one weight row per
    tap and channel (``embedding_bag``), for incremental sampling: ``windows [N, kh, kw, C']``
    long levels of input ``channels`` (``[C']`` long; None: all ``C``), ``-1`` where a tap falls
    outside the image -> ``[N, O]``, no bias."""

    def __init__(self, kernel: torch.Tensor, levels: int) -> None:
        out, features, kh, kw = kernel.shape
        # rows ordered (tap row, tap column, channel, level), then a zero row that -1 reads
        self.table = nn.functional.pad(kernel.permute(2, 3, 1, 0).reshape(-1, out), (0, 0, 0, 1))
        self.offsets = torch.arange(kh * kw * features // levels, device=kernel.device).view(kh, kw, -1) * levels
        self.outside = self.table.shape[0] - 1

    def __call__(self, windows: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        offsets = self.offsets if channels is None else self.offsets[..., channels]
        rows = torch.where(windows >= 0, windows + offsets, self.outside)
        return nn.functional.embedding_bag(rows.flatten(1), self.table, mode="sum")


def level_windows(values: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Rows ``top..bottom-1`` of ``values [B, C, h, w]`` long, ``left`` columns to the left and
    ``right`` to the right of each pixel, ``-1`` outside the image, one window per pixel:
    ``[B*w, bottom - top, left + 1 + right, C]``."""
    rows = values[:, :, max(top, 0) : bottom]
    rows = nn.functional.pad(rows, (left, right, bottom - top - rows.shape[2], 0), value=-1)
    return rows.unfold(3, left + 1 + right, 1).permute(0, 3, 2, 4, 1).flatten(0, 1)


def levels_left(values: torch.Tensor, row: int, col: int, count: int) -> torch.Tensor:
    """The levels of the ``count`` pixels left of (row, col) in ``values [B, C, h, w]`` long,
    ``-1`` off the image, as one window ``[B, 1, count, C]``."""
    levels = values[:, :, row, max(col - count, 0) : col]
    return nn.functional.pad(levels, (count - levels.shape[2], 0), value=-1).transpose(1, 2).unsqueeze(1)


def rows_above(x: torch.Tensor, kernel: torch.Tensor, row: int) -> torch.Tensor:
    """What the rows above ``row`` of ``x [B, in, h, w]`` give to row ``row`` of a same-size
    convolution by ``kernel [out, in, kh, kw]`` (no bias): ``[B, out, w]``."""
    reach, pad = kernel.shape[2] // 2, kernel.shape[3] // 2
    rows = x[:, :, max(row - reach, 0) : row]
    rows = nn.functional.pad(rows, (pad, pad, reach - rows.shape[2], 0))
    return nn.functional.conv2d(rows, kernel[:, :, :reach])[:, :, 0]


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

    def at_pixel(self) -> PixelHead:
        """The head for one pixel at a time, its masked weights taken once."""
        return PixelHead(self)


class PixelHead:
    """A ``MaskedHead`` applied to one pixel's features ``h [B, F]``: the logits of every
    channel, or of one channel alone (whose logits read only its own output rows)."""

    def __init__(self, head: MaskedHead) -> None:
        self.levels = head.levels
        self.hidden = centre_tap(head.hidden.masked_weight())
        self.hidden_bias = head.hidden.bias
        self.out, self.out_bias = centre_tap(head.out.masked_weight()), head.out.bias  # [F, C*L]
        self.channel_out = list(zip(self.out_bias.split(self.levels), self.out.split(self.levels, dim=1)))

    def _hidden(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.addmm(self.hidden_bias, torch.relu(h), self.hidden))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, L, C]``."""
        x = torch.addmm(self.out_bias, self._hidden(h), self.out)
        return x.view(x.shape[0], -1, self.levels).transpose(1, 2)

    def channel_logits(self, h: torch.Tensor, channel: int) -> torch.Tensor:
        """``[B, L]``, channel ``channel``'s."""
        bias, weight = self.channel_out[channel]
        return torch.addmm(bias, self._hidden(h), weight)


def check_channel_groups(spec: SliceSpec, **features: int) -> None:
    """Raise ``ValueError`` unless each named width gives every colour channel a group."""
    for name, count in features.items():
        if count < spec.channels:
            raise ValueError(f"{name} ({count}) must be at least the image channels ({spec.channels}): "
                             "each colour channel needs its own group of features")
