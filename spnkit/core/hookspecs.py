"""The hooks a plugin implements. Each receives a ``register(name, cls)`` callback.

A plugin module (built-in or third-party) implements any of these with ``@spnkit.hookimpl``::

    @spnkit.hookimpl
    def spnkit_register_orderings(register):
        register("zigzag", ZigzagOrdering)

``cls`` subclasses the matching interface in ``spnkit.core.interfaces`` and carries an attrs
``Options`` class.
"""

import pluggy

hookspec = pluggy.HookspecMarker("spnkit")
hookimpl = pluggy.HookimplMarker("spnkit")


@hookspec
def spnkit_register_orderings(register):
    """Register ``spnkit.core.interfaces.Ordering`` subclasses."""


@hookspec
def spnkit_register_quantizers(register):
    """Register ``spnkit.core.interfaces.Quantizer`` subclasses."""


@hookspec
def spnkit_register_encoders(register):
    """Register ``spnkit.core.interfaces.ContextEncoder`` subclasses."""


@hookspec
def spnkit_register_decoders(register):
    """Register ``spnkit.core.interfaces.SliceDecoder`` subclasses."""


@hookspec
def spnkit_register_conditioners(register):
    """Register ``spnkit.core.interfaces.Conditioner`` subclasses."""


@hookspec
def spnkit_register_backends(register):
    """Register ``spnkit.core.backend.Backend`` subclasses (where training runs)."""
