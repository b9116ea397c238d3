"""Sampling by the Gumbel-max trick with noise drawn up front.

Drawing the noise for every subpixel before sampling starts makes the draws independent of
the order in which a decoder computes its logits, so the reference path and any cached fast
path draw exactly the same samples from the same seed.
"""

from __future__ import annotations

import torch


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard Gumbel noise of ``shape`` (e.g. ``[B, L, C, h, w]``)."""
    source = generator.device if generator is not None else device
    uniform = torch.rand(shape, generator=generator, dtype=torch.float64, device=source).to(device)
    tiny = torch.finfo(torch.float64).tiny
    return (-torch.log(-torch.log(uniform.clamp_min(tiny)))).to(dtype)


def draw(logits: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Sample levels from ``logits [B, L]`` with Gumbel ``noise [B, L]``: ``[B]`` long.

    Logits are divided by ``temperature`` (the paper samples its first stage at 0.99).
    """
    return torch.argmax(logits / temperature + noise, dim=1)


def keep_given(drawn: torch.Tensor, given: torch.Tensor | None, index: tuple) -> torch.Tensor:
    """``drawn [B]`` where ``given[:, *index]`` is ``-1`` (or ``given`` is None), else the given value."""
    if given is None:
        return drawn
    value = given[(slice(None), *index)]
    return torch.where(value >= 0, value, drawn)
