"""The Polyak average of a model's weights (the paper's 0.9999), which evaluation and sampling use."""

from __future__ import annotations

import copy

import torch
from torch import nn


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay of update ``updates`` (counted from 0): ``min(decay, (1 + n) / (10 + n))``, as
    TensorFlow's moving average with ``num_updates``, so that an early average follows the
    weights instead of remembering their random start (plain 0.9999 keeps 99.8% of the
    initial weights after 20 steps)."""
    return min(decay, (1 + updates) / (10 + updates))


class PolyakAverage:
    """An exponential moving average of ``model``'s parameters, kept in ``averaged`` (a copy of
    the model, so its state dict loads straight into the model). Updated in place with one
    fused ``lerp`` and no host sync (safe on XLA); ``updates`` counts the updates."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.averaged = copy.deepcopy(model)
        self.averaged.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``average += (1 - d) * (current - average)`` for every parameter, ``d`` the warmed-up decay."""
        weight = 1 - warmed_up_decay(self.decay, self.updates)
        torch._foreach_lerp_(list(self.averaged.parameters()), [p.detach() for p in model.parameters()], weight)
        self.updates += 1
