"""The two PixelRNN layers (van den Oord et al. 2016b, section 3.1-3.2).

Both take and return feature maps ``[B, F, h, w]`` whose features are grouped by image
channel (see ``spnkit.nn.masked_conv``), add an optional context map through 1x1 convolutions before the
gates, and end with a residual connection.
"""

from __future__ import annotations

import torch
from torch import nn

from spnkit.nn.masked_conv import MaskedConv2d


def _lstm_step(gates: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gates ``[B, 4F, ...]`` (input, forget, output, content) -> new (hidden, cell)."""
    i, f, o, g = gates.chunk(4, dim=1)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(cell), cell


class _Layer(nn.Module):
    """Masked input-to-state gates for ``directions`` LSTMs, context before the gates, and the
    residual output convolution."""

    def __init__(self, features: int, channels: int, context_channels: int, input_kernel: tuple[int, int],
                 directions: int = 1) -> None:
        super().__init__()
        self.features = features
        gates = 4 * directions * features
        self.input_to_state = MaskedConv2d(features, gates, input_kernel, channels, "B", out_chunks=4 * directions)
        self.context = nn.Conv2d(context_channels, gates, 1) if context_channels else None
        self.residual = MaskedConv2d(features, features, (1, 1), channels, "B")

    def _inputs(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        pre = self.input_to_state(x)
        return pre if self.context is None else pre + self.context(context)


class RowLSTM(_Layer):
    """Row LSTM: a ``1 x k`` masked input-to-state convolution over the row and a ``1 x k``
    state-to-state convolution over the previous row's hidden state, row by row. Its
    receptive field is a triangle above the pixel."""

    def __init__(self, features: int, channels: int, context_channels: int = 0, kernel: int = 3) -> None:
        super().__init__(features, channels, context_channels, (1, kernel))
        self.state_to_state = nn.Conv1d(features, 4 * features, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                pixels: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, F, h, w]`` features -> ``[B, F, h, w]``; ``pixels`` is not needed."""
        pre = self._inputs(x, context)
        b, _, height, width = x.shape
        hidden = x.new_zeros(b, self.features, width)
        cell = torch.zeros_like(hidden)
        rows = []
        for row in range(height):
            hidden, cell = _lstm_step(pre[:, :, row] + self.state_to_state(hidden), cell)
            rows.append(hidden)
        return x + self.residual(torch.stack(rows, dim=2))


def skew(x: torch.Tensor) -> torch.Tensor:
    """``[B, F, h, w]`` -> ``[B, F, h, w + h - 1]``: row ``i`` shifted right by ``i``."""
    b, f, height, width = x.shape
    out = x.new_zeros(b, f, height, width + height - 1)
    for row in range(height):
        out[:, :, row, row : row + width] = x[:, :, row]
    return out


def unskew(x: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of ``skew``."""
    return torch.stack([x[:, :, row, row : row + width] for row in range(x.shape[2])], dim=2)


class DiagonalLSTM(nn.Module):
    """One direction of the Diagonal BiLSTM: on the skewed map, column by column, with a
    ``2 x 1`` state-to-state convolution over the previous column (rows i-1 and i), so the
    state at a pixel sees the pixel to its left and the pixel above."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.state_to_state = nn.Conv1d(features, 4 * features, 2, padding=1)

    def forward(self, pre: torch.Tensor) -> torch.Tensor:
        """pre ``[B, 4F, h, w]`` gate inputs -> hidden ``[B, F, h, w]``."""
        width = pre.shape[3]
        skewed = skew(pre)
        b, _, height, columns = skewed.shape
        hidden = pre.new_zeros(b, self.features, height)
        cell = torch.zeros_like(hidden)
        out = []
        for column in range(columns):
            recurrent = self.state_to_state(hidden)[:, :, :height]
            hidden, cell = _lstm_step(skewed[:, :, :, column] + recurrent, cell)
            out.append(hidden)
        return unskew(torch.stack(out, dim=3), width)


class DiagonalBiLSTM(_Layer):
    """Diagonal BiLSTM: a left-to-right and a right-to-left diagonal LSTM over ``1 x 1`` masked
    input-to-state maps; the right-to-left output is shifted down one row before the two are
    added, so every pixel sees the whole context above it and to its left.

    The right-to-left direction also reads the raw pixels through an unmasked 1x1 convolution
    (safe: its output moves down a row). Without it the last subpixel of the row above is
    seen by no feature at an earlier position (the mask-A first layer hides a pixel from its
    own features) and would be a one-pixel blind spot.
    """

    def __init__(self, features: int, channels: int, context_channels: int = 0, pixel_features: int = 0) -> None:
        super().__init__(features, channels, context_channels, (1, 1), directions=2)
        self.left_lstm = DiagonalLSTM(features)
        self.right_lstm = DiagonalLSTM(features)
        self.pixels = nn.Conv2d(pixel_features, 4 * features, 1, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                pixels: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, F, h, w]`` features; pixels ``[B, C*L, h, w]`` the one-hot slice."""
        left_gates, right_gates = self._inputs(x, context).chunk(2, dim=1)
        right_gates = right_gates + self.pixels(pixels)
        left = self.left_lstm(left_gates)
        right = self.right_lstm(right_gates.flip(3)).flip(3)
        right = nn.functional.pad(right, (0, 0, 1, 0))[:, :, :-1]
        return x + self.residual(left + right)
