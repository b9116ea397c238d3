"""spnkit: Subscale Pixel Networks and the PixelCNN family as a plugin framework."""

from spnkit.hookspecs import hookimpl

__all__ = ["hookimpl"]
