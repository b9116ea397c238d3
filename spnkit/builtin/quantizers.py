"""Depth split (paper Eq. 3-4) and bit reduction for the 5-bit benchmarks."""

from __future__ import annotations

import attrs
import torch

from spnkit.core.bits import join_planes, split_planes
from spnkit.core.hookspecs import hookimpl
from spnkit.core.interfaces import Quantizer
from spnkit.core.validators import each, non_empty, up_to


@attrs.frozen
class DepthSplitOptions:
    splits: list[int] = attrs.field(factory=lambda: [3, 5], validator=[non_empty, each(up_to(8))],
                                  metadata={"doc": "bits per plane, most significant first; they add up to data.bits"})


@attrs.frozen
class ReduceBitsOptions:
    bits: int = attrs.field(default=5, validator=up_to(8),
                          metadata={"doc": "the most significant bits kept of each subpixel"})
    splits: list[int] | None = attrs.field(default=None, validator=attrs.validators.optional(each(up_to(8))),
                                         metadata={"doc": "bits per plane, most significant first, adding up to bits (unset: one plane)"})


class DepthSplit(Quantizer):
    """Splits the bits of each subpixel into planes, most significant first (e.g. 8 = 3 + 5)."""

    Options = DepthSplitOptions

    def check(self) -> list[str]:
        total = sum(self.options.splits)
        if total != self.in_bits:
            return [f"splits {self.options.splits} sum to {total} bits but the data has {self.in_bits}"]
        return []

    @property
    def plane_bits(self) -> list[int]:
        return list(self.options.splits)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return split_planes(x, self.plane_bits)

    def decode(self, planes: list[torch.Tensor]) -> torch.Tensor:
        return join_planes(planes, self.plane_bits)


class ReduceBits(Quantizer):
    """Keeps the ``bits`` most significant bits (5-bit benchmarks), optionally split further."""

    Options = ReduceBitsOptions

    @property
    def dropped(self) -> int:
        return self.in_bits - self.options.bits

    def check(self) -> list[str]:
        problems = []
        if self.options.bits > self.in_bits:
            problems.append(f"bits {self.options.bits} exceeds the data's {self.in_bits}")
        if self.options.splits is not None and sum(self.options.splits) != self.options.bits:
            problems.append(f"splits {self.options.splits} sum to {sum(self.options.splits)}, not bits {self.options.bits}")
        return problems

    @property
    def plane_bits(self) -> list[int]:
        return list(self.options.splits) if self.options.splits else [self.options.bits]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return split_planes(x >> self.dropped, self.plane_bits)

    def decode(self, planes: list[torch.Tensor]) -> torch.Tensor:
        return join_planes(planes, self.plane_bits) << self.dropped


@hookimpl
def spnkit_register_quantizers(register):
    register("depth_split", DepthSplit)
    register("reduce_bits", ReduceBits)
