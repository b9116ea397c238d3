"""Pre-norm transformer blocks over token sequences ``[B, T, D]``, and key/value caches that
run causal blocks one token at a time."""

from __future__ import annotations

import torch
from torch import nn


class KVCache:
    """The keys and values of one causal ``SelfAttention`` for the tokens so far, each
    ``[B, heads, T, D / heads]`` in the dtype and on the device of ``like``."""

    def __init__(self, batch: int, heads: int, length: int, head_channels: int, like: torch.Tensor) -> None:
        self.keys = like.new_zeros(batch, heads, length, head_channels)
        self.values = like.new_zeros(batch, heads, length, head_channels)


class SelfAttention(nn.Module):
    """Multi-head self-attention; ``causal``: token t attends to tokens <= t only."""

    def __init__(self, channels: int, heads: int, causal: bool) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.causal = causal
        self.channels = channels
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(b, t, d))

    def kv_cache(self, batch: int, length: int, like: torch.Tensor) -> KVCache:
        """An empty cache for ``step`` over up to ``length`` tokens (causal attention only)."""
        if not self.causal:
            raise ValueError("a key/value cache runs causal attention only")
        return KVCache(batch, self.heads, length, self.channels // self.heads, like)

    def step(self, x: torch.Tensor, cache: KVCache, position: int) -> torch.Tensor:
        """``forward`` at token ``position`` alone, given the tokens before it in ``cache`` (this
        token's key and value are added): ``x [B, 1, D]`` -> ``[B, 1, D]``."""
        b, _, d = x.shape
        q, k, v = self.qkv(x).view(b, 1, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        cache.keys[:, :, position] = k[:, :, 0]
        cache.values[:, :, position] = v[:, :, 0]
        y = nn.functional.scaled_dot_product_attention(q, cache.keys[:, :, : position + 1],
                                                       cache.values[:, :, : position + 1])
        return self.out(y.transpose(1, 2).reshape(b, 1, d))


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

    def step(self, x: torch.Tensor, cache: KVCache, position: int) -> torch.Tensor:
        """``forward`` of a causal block at token ``position`` alone (see ``SelfAttention.step``):
        ``x [B, 1, D]`` -> ``[B, 1, D]``."""
        x = x + self.attention.step(self.attention_norm(x), cache, position)
        return x + self.feed_forward(self.ff_norm(x))
