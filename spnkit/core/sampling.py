"""Sampling by the Gumbel-max trick with noise drawn up front.

Drawing the noise for every subpixel before sampling starts makes the draws independent of
the order in which a decoder computes its logits, so the reference path and any cached fast
path draw exactly the same samples from the same seed. Both run the one subpixel loop,
``draw_slice``, over a ``SliceCache`` that gives the logits of the next pixel; classifier-free
guidance runs it over a ``GuidedCache`` of two.
"""

from __future__ import annotations

import abc

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
    if temperature != 1.0:  # dividing by 1 changes no bit
        logits = logits / temperature
    return torch.argmax(logits + noise, dim=1)


def keep_given(drawn: torch.Tensor, given: torch.Tensor | None, index: tuple) -> torch.Tensor:
    """``drawn [B]`` where ``given[:, *index]`` is ``-1`` (or ``given`` is None), else the given value."""
    if given is None:
        return drawn
    value = given[(slice(None), *index)]
    return torch.where(value >= 0, value, drawn)


class PixelInputs:
    """A slice while it is sampled: ``values [B, C, h, w]`` long and the same as one-hot
    channel-major features ``[B, C*L, h, w]`` in the noise's dtype (feature ``c*L + l`` is
    level ``l`` of channel ``c``), laid out channels-last so that one pixel's features are
    contiguous. Subpixels not drawn yet are 0 in ``values`` and all-zero in ``features``."""

    def __init__(self, noise: torch.Tensor) -> None:
        """``noise``: the slice's ``[B, L, C, h, w]`` Gumbel noise (sets shape, dtype, device)."""
        batch, self.levels, channels, height, width = noise.shape
        self.values = torch.zeros(batch, channels, height, width, dtype=torch.long, device=noise.device)
        self.features = noise.new_zeros(batch, height, width, channels * self.levels).permute(0, 3, 1, 2)

    def set(self, row: int, col: int, channel: int, value: torch.Tensor) -> None:
        """Record the drawn ``value [B]`` long of subpixel (channel, row, col), which is set once."""
        self.values[:, channel, row, col] = value
        block = self.features[:, channel * self.levels : (channel + 1) * self.levels, row, col]
        block.scatter_(1, value.view(-1, 1), 1.0)


class SliceCache(abc.ABC):
    """A decoder's incremental evaluation while ``draw_slice`` samples a slice: it reads the
    ``PixelInputs`` drawn so far and reuses what it computed for earlier subpixels.

    Per pixel in raster order: ``start_pixel`` once, then ``channel_logits`` once per channel
    (after each, the drawn channel is set in the inputs); ``finish_row`` after each row.
    """

    def start_pixel(self, row: int, col: int) -> None:
        """Work done once per pixel, before its first channel is drawn."""

    @abc.abstractmethod
    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        """Logits ``[B, L, C]`` of pixel (row, col) given every subpixel set so far (only the
        channel about to be drawn is read)."""

    def channel_logits(self, row: int, col: int, channel: int) -> torch.Tensor:
        """Logits ``[B, L]`` of subpixel (channel, row, col), the channel about to be drawn:
        ``pixel_logits``' channel, which a cache may compute alone."""
        return self.pixel_logits(row, col)[:, :, channel]

    def finish_row(self, row: int) -> None:
        """Work done once a row is complete."""


class GuidedCache(SliceCache):
    """Classifier-free guidance: the logits ``(1 + W) * cond - W * uncond`` of two caches over
    the same subpixels, one given the images' labels, one given "no label" (``W`` = ``weight``;
    0 gives ``cond`` itself, bit for bit)."""

    def __init__(self, cond: SliceCache, uncond: SliceCache, weight: float) -> None:
        self.cond, self.uncond, self.weight = cond, uncond, weight

    def _guide(self, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        return (1 + self.weight) * cond - self.weight * uncond

    def start_pixel(self, row: int, col: int) -> None:
        self.cond.start_pixel(row, col)
        self.uncond.start_pixel(row, col)

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        return self._guide(self.cond.pixel_logits(row, col), self.uncond.pixel_logits(row, col))

    def channel_logits(self, row: int, col: int, channel: int) -> torch.Tensor:
        return self._guide(self.cond.channel_logits(row, col, channel),
                           self.uncond.channel_logits(row, col, channel))

    def finish_row(self, row: int) -> None:
        self.cond.finish_row(row)
        self.uncond.finish_row(row)


class TwinInputs:
    """The ``PixelInputs`` of a ``GuidedCache``'s two caches, set together: both see every draw."""

    def __init__(self, cond: PixelInputs, uncond: PixelInputs) -> None:
        self.cond, self.uncond = cond, uncond

    @property
    def values(self) -> torch.Tensor:
        return self.cond.values

    def set(self, row: int, col: int, channel: int, value: torch.Tensor) -> None:
        self.cond.set(row, col, channel, value)
        self.uncond.set(row, col, channel, value)


def draw_slice(cache: SliceCache, inputs: PixelInputs | TwinInputs, noise: torch.Tensor, temperature: float = 1.0,
               given: torch.Tensor | None = None) -> torch.Tensor:
    """Draw a slice subpixel by subpixel (raster order, channels inside a pixel) from the logits
    of ``cache``, writing each draw into ``inputs``.

    noise: ``[B, L, C, h, w]`` from ``gumbel_noise``; given: ``[B, C, h, w]`` long values to
    keep (``-1``: draw), or None. Returns ``inputs.values``, ``[B, C, h, w]`` long.

    The loop runs on one torch thread (restored after): its steps are too small to share, and
    threads that wait for each other, on a busy machine above all, cost more than the steps.
    """
    _, _, channels, height, width = noise.shape
    noise = noise.permute(3, 4, 2, 0, 1).contiguous()  # [h, w, C, B, L]: each subpixel's noise contiguous
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for row in range(height):
            for col in range(width):
                cache.start_pixel(row, col)
                for channel in range(channels):
                    logits = cache.channel_logits(row, col, channel)
                    drawn = draw(logits, noise[row, col, channel], temperature)
                    inputs.set(row, col, channel, keep_given(drawn, given, (channel, row, col)))
            cache.finish_row(row)
    finally:
        torch.set_num_threads(threads)
    return inputs.values
