"""The recipe's ``[data]`` section: where images come from and what they are."""

from __future__ import annotations

import attrs

import torch

from spnkit.core.validators import in_range, non_negative, up_to


@attrs.frozen
class DataConfig:
    """Where images come from and what they are."""

    source: str = attrs.field(default="fashion_mnist",
                            metadata={"doc": "fashion_mnist, fashion_mnist_embedded, fashion_mnist_full or shards"})
    height: int = attrs.field(default=28, validator=up_to(4096), metadata={"doc": "image height in pixels"})
    width: int = attrs.field(default=28, validator=up_to(4096), metadata={"doc": "image width in pixels"})
    channels: int = attrs.field(default=1, validator=up_to(4), metadata={"doc": "colour channels (1: grey, 3: RGB)"})
    bits: int = attrs.field(default=8, validator=in_range(1, 8, closed_high=True, note="images are read as 8-bit"),
                          metadata={"doc": "the most significant bits of each 8-bit subpixel that are modelled (5: the 5-bit benchmarks)"})
    train: str = attrs.field(default="",
                           metadata={"doc": "shards: the training shards, a path, brace pattern or glob, e.g. data/x/train-{000000..000026}.tar"})
    test: str = attrs.field(default="", metadata={"doc": "shards: the test shards, as train"})
    prepare: str = attrs.field(default="",
                             metadata={"doc": "the command that makes the shards, shown when they are missing"})
    workers: int = attrs.field(default=0, validator=in_range(0, 256),
                             metadata={"doc": "loader processes per rank (0: in process)"})
    max_bad_samples: int = attrs.field(default=10, validator=non_negative,
                                     metadata={"doc": "damaged samples skipped before the run stops"})
    streams: int = attrs.field(default=0, validator=in_range(0, 65536, note="0: ranks x workers"),
                             metadata={"doc": "data streams per global batch (0: ranks x workers)"})

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of an image."""
        return self.channels, self.height, self.width

    def to_levels(self, pixels: torch.Tensor) -> torch.Tensor:
        """8-bit images (uint8, any shape) -> their ``bits`` most significant bits: long in
        ``[0, 2**bits)``, what models see. The one place that maps pixels to levels."""
        return pixels.long() >> (8 - self.bits)

    def to_pixels(self, levels: torch.Tensor) -> torch.Tensor:
        """Inverse of ``to_levels`` up to the dropped bits (left zero): uint8 images."""
        return (levels.long() << (8 - self.bits)).to(torch.uint8)
