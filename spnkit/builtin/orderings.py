"""Raster and subscale orderings (Menick & Kalchbrenner 2018, Eq. 2)."""

from __future__ import annotations

import attrs
import torch

from spnkit.core.hookspecs import hookimpl
from spnkit.core.interfaces import NoOptions, Ordering
from spnkit.core.validators import up_to


@attrs.frozen
class SubscaleOptions:
    factor: int = attrs.field(default=2, validator=up_to(256),
                            metadata={"doc": "S: slice (i, j) holds pixels x[i + S*h, j + S*w]; S*S slices"})


class SubscaleOrdering(Ordering):
    """Subscale order: slice (i, j) holds x[i + S*h, j + S*w]; slices in row-major (i, j) order."""

    Options = SubscaleOptions

    @property
    def factor(self) -> int:
        return self.options.factor

    def check(self, height: int, width: int) -> list[str]:
        s = self.factor
        if height % s or width % s:
            return [f"image size {height}x{width} is not divisible by the subscale factor {s}"]
        return []

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return self.factor, self.factor

    def slice_shape(self, height: int, width: int) -> tuple[int, int]:
        return height // self.factor, width // self.factor

    def to_slices(self, x: torch.Tensor) -> torch.Tensor:
        s = self.factor
        b, c, height, width = x.shape
        h, w = height // s, width // s
        # [B, C, h, i, w, j] -> [B, i, j, C, h, w]
        return x.reshape(b, c, h, s, w, s).permute(0, 3, 5, 1, 2, 4).reshape(b, s * s, c, h, w)

    def from_slices(self, slices: torch.Tensor, height: int, width: int) -> torch.Tensor:
        s = self.factor
        b, _, c, h, w = slices.shape
        return slices.reshape(b, s, s, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, c, height, width)


class RasterOrdering(SubscaleOrdering):
    """Raster order over the whole image: one slice (the subscale order with S = 1)."""

    Options = NoOptions

    @property
    def factor(self) -> int:
        return 1


@hookimpl
def spnkit_register_orderings(register):
    register("raster", RasterOrdering)
    register("subscale", SubscaleOrdering)
