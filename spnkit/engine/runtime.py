"""Choosing and starting the backend a run trains on (the interface is ``spnkit.core.backend``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from spnkit.core import plugins
from spnkit.core.backend import Backend, RuntimeConfig
from spnkit.core.recipe import RecipeError

AUTO_ORDER = ("xla", "cuda", "cpu")


def start_backend(runtime: RuntimeConfig, registry: plugins.Registry | None = None,
                  name: str | None = None) -> Backend:
    """The backend ``name`` (default ``runtime.backend``; ``auto``: the first available of
    ``AUTO_ORDER``), started: this process has joined its run."""
    registry = registry or plugins.default_registry()
    wanted = name or runtime.backend
    installed = registry.names("backend")
    if wanted == "auto":
        wanted = next((n for n in AUTO_ORDER if n in installed and registry.get("backend", n).cls.available()), "cpu")
    if wanted not in installed:
        raise RecipeError([f"runtime.backend: unknown backend {wanted!r}; installed: {', '.join(installed)}"])
    cls = registry.get("backend", wanted).cls
    if not cls.available():
        raise RecipeError([f"runtime.backend: {wanted!r} is not available on this machine"])
    backend = cls(runtime)
    backend.start()
    return backend


@contextlib.contextmanager
def started_backend(runtime: RuntimeConfig, registry: plugins.Registry | None = None,
                    name: str | None = None) -> Iterator[Backend]:
    """``start_backend`` that leaves the run's process group on exit."""
    backend = start_backend(runtime, registry, name)
    try:
        yield backend
    finally:
        backend.stop()
