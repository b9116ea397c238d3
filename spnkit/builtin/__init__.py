"""Built-in plugins. Each module registers through the hooks in ``spnkit.core.hookspecs``, exactly
as a third-party distribution would."""
