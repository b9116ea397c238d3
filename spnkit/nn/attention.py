"""Pre-norm transformer blocks over token sequences ``[B, T, D]``."""

from __future__ import annotations

import torch
from torch import nn


def divides(channels_field: str):
    """attrs validator for a ``heads`` option: it must divide the options' ``channels_field``."""

    def check(instance, attribute, value: int) -> None:
        channels = getattr(instance, channels_field)
        if channels % value:
            raise ValueError(f"'{attribute.name}' ({value}) must divide '{channels_field}' ({channels})")

    return check


class SelfAttention(nn.Module):
    """Multi-head self-attention; ``causal``: token t attends to tokens <= t only."""

    def __init__(self, channels: int, heads: int, causal: bool) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.causal = causal
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    """``x + attention(norm(x))`` then ``x + feed_forward(norm(x))``: ``[B, T, D]`` -> same."""

    def __init__(self, channels: int, heads: int, causal: bool, ff_multiplier: int = 4) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(channels)
        self.attention = SelfAttention(channels, heads, causal)
        self.ff_norm = nn.LayerNorm(channels)
        self.feed_forward = nn.Sequential(
            nn.Linear(channels, ff_multiplier * channels), nn.GELU(), nn.Linear(ff_multiplier * channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ff_norm(x))
