"""The plugin walk-through in CONTRIBUTING.md must work as written."""

import importlib.util
import re
from pathlib import Path

from spnkit.core import plugins

from spnkit import testing

DOC = Path(__file__).parents[1] / "CONTRIBUTING.md"


def _plugin_module(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    source = next(b for b in blocks if "def spnkit_register_orderings" in b)
    path = tmp_path / "spnkit_zigzag.py"
    path.write_text("\n".join(line[3:] if line.startswith("   ") else line for line in source.splitlines()))
    spec = importlib.util.spec_from_file_location("spnkit_zigzag", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_walkthrough_plugin_registers_and_passes_the_kit(tmp_path):
    module = _plugin_module(tmp_path)
    registry = plugins.load(autoload=False, extra=[module])
    entry = registry.get("ordering", "zigzag")
    ordering = entry.cls(entry.cls.Options(factor=3))
    testing.check_ordering_round_trip(ordering, 3, 6, 9)
