"""spnkit: Subscale Pixel Networks and the PixelCNN family as a plugin framework."""

from spnkit.core.hookspecs import hookimpl

__all__ = ["hookimpl"]
