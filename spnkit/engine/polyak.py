"""The Polyak average of a model's weights (the paper's 0.9999), which evaluation and sampling use."""

from __future__ import annotations

import copy

import torch
from torch import nn


class PolyakAverage:
    """An exponential moving average of ``model``'s parameters, kept in ``averaged`` (a copy of
    the model, so its state dict loads straight into the model). Updated in place with one
    fused ``lerp`` and no host sync (safe on XLA); ``updates`` counts the updates."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.averaged = copy.deepcopy(model)
        self.averaged.requires_grad_(False)
        self.decay = decay
        self.updates = torch.zeros((), dtype=torch.long, device=next(model.parameters()).device)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``average += (1 - decay) * (current - average)`` for every parameter."""
        averages = list(self.averaged.parameters())
        torch._foreach_lerp_(averages, [p.detach() for p in model.parameters()], 1 - self.decay)
        self.updates.add_(1)
