"""Splitting integer images into bit planes and joining them back."""

from __future__ import annotations

import torch


def split_planes(x: torch.Tensor, splits: list[int]) -> list[torch.Tensor]:
    """``x`` (long, ``sum(splits)`` bits) -> one long tensor per split, most significant first."""
    planes, remaining = [], sum(splits)
    for bits in splits:
        remaining -= bits
        planes.append((x >> remaining) & ((1 << bits) - 1))
    return planes


def join_planes(planes: list[torch.Tensor], splits: list[int]) -> torch.Tensor:
    """Inverse of ``split_planes``."""
    out = torch.zeros_like(planes[0])
    for plane, bits in zip(planes, splits):
        out = (out << bits) | plane
    return out
