"""What a run folder says about itself, written when training starts: the resolved recipe
(``OUT/recipe.toml``: every default filled in, overrides applied, readable and runnable again)
and the plugins that built it (``OUT/plugins.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from spnkit.core import build
from spnkit.engine.out_folder import replace_file

RECIPE, PLUGINS = "recipe.toml", "plugins.json"


def plugins_used(resolved: build.Resolved) -> list[dict]:
    """Every component the recipe uses: where it sits, kind, name, distribution and version."""
    chosen = [("quantizer", resolved.quantizer_choice)]
    for name, plan in resolved.stages.items():
        chosen += [(f"stages.{name}.{key}", getattr(plan, key)) for key in build.STAGE_COMPONENTS
                   if getattr(plan, key) is not None]
    return [{"path": path, "kind": c.entry.kind, "name": c.entry.name, "distribution": c.entry.provider.distribution,
             "version": c.entry.provider.version} for path, c in chosen]


def write_run_record(resolved: build.Resolved, out: Path, header: str | None = None) -> None:
    """``OUT/recipe.toml`` (under ``header``, comment lines; by default: how to continue the run)
    and ``OUT/plugins.json``, each replaced whole (atomically)."""
    if header is None:
        header = ("# The resolved recipe of the latest training into this folder: defaults filled in,\n"
                  f"# overrides applied. `spnkit run {out / RECIPE} --out {out}` continues it.\n\n")
    replace_file(out / RECIPE, (header + resolved.to_toml()).encode())
    replace_file(out / PLUGINS, (json.dumps(plugins_used(resolved), indent=2) + "\n").encode())
