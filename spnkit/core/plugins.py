"""Plugin manager and registries: one registry per kind, filled only through hooks.

Built-ins register through the same hooks as third-party distributions; third-party ones are
found through the ``spnkit`` entry-point group. Set ``SPNKIT_DISABLE_PLUGIN_AUTOLOAD=1`` to
load built-ins only (the test suite does).
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import warnings

import attrs
import pluggy

from spnkit.core import hookspecs, interfaces
from spnkit.core.errors import SpnkitError
from spnkit.core.backend import Backend

ENTRY_POINT_GROUP = "spnkit"
AUTOLOAD_SWITCH = "SPNKIT_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_MODULES = (
    "spnkit.builtin.orderings",
    "spnkit.builtin.quantizers",
    "spnkit.builtin.pixelcnn",
    "spnkit.builtin.transformer",
    "spnkit.builtin.embedder",
    "spnkit.builtin.conditioners",
    "spnkit.builtin.backends",
    "spnkit.builtin.xla",
)

KINDS = {
    "ordering": ("spnkit_register_orderings", interfaces.Ordering),
    "quantizer": ("spnkit_register_quantizers", interfaces.Quantizer),
    "encoder": ("spnkit_register_encoders", interfaces.ContextEncoder),
    "decoder": ("spnkit_register_decoders", interfaces.SliceDecoder),
    "conditioner": ("spnkit_register_conditioners", interfaces.Conditioner),
    "backend": ("spnkit_register_backends", Backend),
}


class PluginError(SpnkitError):
    """A plugin is broken or clashes with another; the message names the provider."""


class UnknownPluginError(SpnkitError, LookupError):
    """A recipe names a plugin that no installed distribution provides."""


@attrs.frozen
class Provider:
    """Who supplied a registration: a distribution (or ``spnkit`` for built-ins)."""

    distribution: str
    version: str
    module: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} ({self.module})"


@attrs.frozen
class Entry:
    kind: str
    name: str
    cls: type
    provider: Provider

    @property
    def summary(self) -> str:
        doc = (self.cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


@attrs.frozen
class LoadFailure:
    """An entry point that could not be imported or registered."""

    distribution: str
    version: str
    entry_point: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.entry_point!r} from {self.distribution} {self.version} failed to load: {self.error}"


class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.failures: list[LoadFailure] = []

    def add(self, entry: Entry) -> None:
        existing = self.entries[entry.kind].get(entry.name)
        if existing is not None:
            raise PluginError(
                f"{entry.kind} {entry.name!r} is registered twice: by {existing.provider} and by {entry.provider}"
            )
        expected = KINDS[entry.kind][1]
        if not (isinstance(entry.cls, type) and issubclass(entry.cls, expected)):
            raise PluginError(
                f"{entry.kind} {entry.name!r} from {entry.provider} must subclass "
                f"{expected.__module__}.{expected.__name__}, got {entry.cls!r}"
            )
        if not attrs.has(entry.cls.Options):
            raise PluginError(f"{entry.kind} {entry.name!r} from {entry.provider}: Options must be an attrs class")
        self.entries[entry.kind][entry.name] = entry

    def get(self, kind: str, name: str) -> Entry:
        found = self.entries[kind].get(name)
        if found is None:
            raise UnknownPluginError(unknown_message(kind, name, sorted(self.entries[kind])))
        return found

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])


def unknown_message(kind: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    listing = ", ".join(available) or "none"
    return (
        f"unknown {kind} {name!r}; {hint}available: {listing} "
        f"(third-party {kind}s are installed with pip and found through the '{ENTRY_POINT_GROUP}' entry-point group)"
    )


def _builtin_provider(module: str) -> Provider:
    return Provider("spnkit", _version("spnkit"), module)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _collect(manager: pluggy.PluginManager, registry: Registry, providers: dict[int, Provider]) -> None:
    """Call every hook implementation separately so each registration knows its provider."""
    for kind, (hook_name, _) in KINDS.items():
        hook = getattr(manager.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            provider = providers[id(impl.plugin)]

            def register(name: str, cls: type, _kind=kind, _provider=provider) -> None:
                registry.add(Entry(_kind, name, cls, _provider))

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                if provider.distribution == "spnkit":
                    raise
                registry.failures.append(LoadFailure(
                    provider.distribution, provider.version, provider.module, f"{type(exc).__name__}: {exc}"))


def load(autoload: bool | None = None, strict: bool = False,
         extra: list[object] = ()) -> Registry:
    """Build a fresh registry from the built-ins, the entry points and ``extra`` plugin objects.

    A third-party plugin that fails to import is recorded in ``registry.failures`` and warned
    about (or raised, with ``strict=True``); the others still load.
    """
    if autoload is None:
        autoload = os.environ.get(AUTOLOAD_SWITCH, "") in ("", "0")
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    providers: dict[int, Provider] = {}

    for module_name in BUILTIN_MODULES:
        module = importlib.import_module(module_name)
        manager.register(module, name=module_name)
        providers[id(module)] = _builtin_provider(module_name)

    if autoload:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist is not None else "unknown"
            version = dist.version if dist is not None else "unknown"
            try:
                plugin = entry_point.load()
                manager.register(plugin, name=f"{dist_name}:{entry_point.name}")
            except Exception as exc:  # a broken plugin must not hide the others
                failure = LoadFailure(dist_name, version, entry_point.name, f"{type(exc).__name__}: {exc}")
                if strict:
                    raise PluginError(str(failure)) from exc
                registry.failures.append(failure)
                warnings.warn(str(failure), stacklevel=2)
                continue
            providers[id(plugin)] = Provider(dist_name, version, entry_point.value)

    for plugin in extra:
        manager.register(plugin)
        providers[id(plugin)] = Provider("(in-process)", "", getattr(plugin, "__name__", repr(plugin)))

    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r} implements an unknown hook: {exc}") from exc
    _collect(manager, registry, providers)
    return registry


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _default
    if _default is None:
        _default = load()
    return _default

