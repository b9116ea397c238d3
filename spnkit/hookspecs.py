"""The hooks a plugin implements. Each receives a ``register(name, cls)`` callback.

A plugin module (built-in or third-party) implements any of these with ``@spnkit.hookimpl``::

    @spnkit.hookimpl
    def spnkit_register_orderings(register):
        register("zigzag", ZigzagOrdering)

``cls`` subclasses the matching interface in ``spnkit.interfaces`` and carries an attrs
``Options`` class.
"""

import pluggy

hookspec = pluggy.HookspecMarker("spnkit")
hookimpl = pluggy.HookimplMarker("spnkit")


@hookspec
def spnkit_register_orderings(register):
    """Register ``spnkit.interfaces.Ordering`` subclasses."""


@hookspec
def spnkit_register_quantizers(register):
    """Register ``spnkit.interfaces.Quantizer`` subclasses."""


@hookspec
def spnkit_register_encoders(register):
    """Register ``spnkit.interfaces.ContextEncoder`` subclasses."""


@hookspec
def spnkit_register_decoders(register):
    """Register ``spnkit.interfaces.SliceDecoder`` subclasses."""


@hookspec
def spnkit_register_conditioners(register):
    """Register ``spnkit.interfaces.Conditioner`` subclasses."""


@hookspec
def spnkit_register_backends(register):
    """Register ``spnkit.engine.backend.Backend`` subclasses (where training runs)."""
