"""spnkit: Subscale Pixel Networks and the PixelCNN family as a plugin framework."""

from spnkit.core.hookspecs import hookimpl

__all__ = ["hookimpl", "load"]


def __getattr__(name: str):
    """``spnkit.load`` (``spnkit.engine.export.load``), imported when first used, so importing
    spnkit (as every plugin does, for ``spnkit.hookimpl``) loads no engine."""
    if name == "load":
        from spnkit.engine.export import load

        return load
    raise AttributeError(f"module 'spnkit' has no attribute {name!r}")
