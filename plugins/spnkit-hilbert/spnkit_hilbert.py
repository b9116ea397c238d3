"""Hilbert-curve pixel order: an spnkit ordering plugin.

The image becomes one slice laid out as a ``1 x (H*W)`` sequence that follows the Hilbert
curve, so consecutive pixels are always spatial neighbours (a raster order jumps a whole row
at each line end). The layout is a sequence, not a 2D grid, so only decoders that declare the
``"sequence"`` pixel order (e.g. ``masked_transformer``) suit it; recipes that pair it with a
convolutional decoder fail validation.
"""

from __future__ import annotations

import torch

import spnkit
from spnkit.core.interfaces import NoOptions, Ordering


def hilbert_index_to_xy(index: int, side: int) -> tuple[int, int]:
    """Position ``(row, col)`` of step ``index`` along the Hilbert curve of a ``side x side`` grid
    (``side`` a power of two)."""
    row = col = 0
    step, t = 1, index
    while step < side:
        rx = 1 & (t // 2)
        ry = 1 & (t ^ rx)
        if ry == 0:
            if rx == 1:
                row, col = step - 1 - row, step - 1 - col
            row, col = col, row
        col += step * rx
        row += step * ry
        t //= 4
        step *= 2
    return row, col


def hilbert_permutation(side: int) -> torch.Tensor:
    """``[side*side]`` long: flat raster index of each step of the curve."""
    return torch.tensor([r * side + c for r, c in (hilbert_index_to_xy(i, side) for i in range(side * side))])


class HilbertOrdering(Ordering):
    """Hilbert-curve order over the whole image, as one sequence slice (square, power-of-two sides)."""

    Options = NoOptions
    pixel_order = "sequence"

    def check(self, height: int, width: int) -> list[str]:
        if height != width or height & (height - 1):
            return [f"the Hilbert order needs a square image with a power-of-two side, got {height}x{width}"]
        return []

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return 1, 1

    def slice_shape(self, height: int, width: int) -> tuple[int, int]:
        return 1, height * width

    def to_slices(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        order = hilbert_permutation(height).to(x.device)
        return x.reshape(b, c, height * width)[:, :, order].view(b, 1, c, 1, height * width)

    def from_slices(self, slices: torch.Tensor, height: int, width: int) -> torch.Tensor:
        b, _, c, _, _ = slices.shape
        inverse = torch.argsort(hilbert_permutation(height)).to(slices.device)
        return slices.reshape(b, c, height * width)[:, :, inverse].view(b, c, height, width)


@spnkit.hookimpl
def spnkit_register_orderings(register):
    register("hilbert", HilbertOrdering)
