"""The import layers of spnkit, checked from the source with ``ast`` (nothing is imported).

    cli, __main__, engine   the top: may import everything below (the codec included)
    testing            the conformance kit: the core only
    codec              lossless compression: the core and data only
    data               anything but builtin, codec, engine and cli
    builtin            plugins: the core, spnkit.nn and ``spnkit`` itself (for ``spnkit.hookimpl``)
    nn                 reusable layers: spnkit.nn and the core
    core               the core and the leaf config module spnkit.data.config only

Every ``import x`` and ``from x import y`` counts, wherever it is (inside functions too);
relative imports are resolved, and ``from spnkit.core import build`` is an import of
``spnkit.core.build``. Module names in strings (the plugin manager's list of built-ins) are not
imports. Third-party and standard-library imports are always allowed.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A pattern "a.b.*" matches the module a.b and everything under it; "a.b" matches a.b only.
TOP = ("spnkit.engine.*", "spnkit.cli", "spnkit.__main__")


@dataclass(frozen=True)
class Rule:
    number: int
    applies_to: tuple[str, ...]  # importing modules the rule constrains
    exempt: tuple[str, ...]  # importing modules it leaves alone
    may_import: tuple[str, ...] | None  # the only spnkit modules they may import (None: any but `never`)
    never: tuple[str, ...]  # spnkit modules they must not import
    why: str


RULES = (
    Rule(1, ("spnkit.*",), TOP, None, TOP,
         "only spnkit.engine, spnkit.cli and spnkit.__main__ may import spnkit.engine or spnkit.cli"),
    Rule(2, ("spnkit.core.*",), (), ("spnkit.core.*", "spnkit.data.config"), (),
         "spnkit.core may import only spnkit.core and spnkit.data.config"),
    Rule(3, ("spnkit.builtin.*",), (), ("spnkit", "spnkit.core.*", "spnkit.nn.*"), (),
         "spnkit.builtin may import only spnkit.core, spnkit.nn and spnkit itself"),
    Rule(4, ("spnkit.nn.*",), (), ("spnkit.nn.*", "spnkit.core.*"), (),
         "spnkit.nn may import only spnkit.nn and spnkit.core"),
    Rule(5, ("spnkit.data.*",), (), None, ("spnkit.builtin.*", "spnkit.codec.*", *TOP),
         "spnkit.data must not import spnkit.builtin, spnkit.codec, spnkit.engine or spnkit.cli"),
    Rule(6, ("spnkit.testing",), (), ("spnkit.core.*",), (),
         "spnkit.testing may import only spnkit.core"),
    Rule(7, ("spnkit.codec.*",), (), ("spnkit.codec.*", "spnkit.core.*", "spnkit.data.*"), (),
         "spnkit.codec may import only spnkit.codec, spnkit.core and spnkit.data"),
)


def matches(module: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern.endswith(".*"):
            package = pattern[:-2]
            if module == package or module.startswith(package + "."):
                return True
        elif module == pattern:
            return True
    return False


def broken_rules(importer: str, imported: str) -> list[Rule]:
    """The rules that the arrow ``importer -> imported`` breaks (empty: allowed)."""
    if not matches(imported, ("spnkit.*",)):
        return []  # standard library and third party
    broken = []
    for rule in RULES:
        if not matches(importer, rule.applies_to) or matches(importer, rule.exempt):
            continue
        if matches(imported, rule.never) or (rule.may_import is not None and not matches(imported, rule.may_import)):
            broken.append(rule)
    return broken


@dataclass(frozen=True)
class Arrow:
    path: str  # relative to the scanned root
    line: int
    importer: str
    imported: str


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_under(root: Path) -> dict[str, Path]:
    """Every module of the ``spnkit`` package under ``root``: {dotted name: file}."""
    return {module_name(path, root): path for path in sorted((root / "spnkit").rglob("*.py"))}


def top_level_names(path: Path) -> set[str]:
    """Names a module binds at its top level (what ``from module import name`` can find)."""
    names = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def imported_from(base: str, name: str, modules: dict[str, Path]) -> str:
    """What ``from base import name`` imports: the submodule ``base.name`` where there is one, or
    where ``base`` is a package whose ``__init__`` does not bind ``name`` (a submodule that does
    not exist yet); otherwise ``base`` itself (``from spnkit import hookimpl``, names of modules)."""
    full = f"{base}.{name}"
    if full in modules:
        return full
    path = modules.get(base)
    if path is not None and path.name == "__init__.py" and name not in top_level_names(path):
        return full
    return base


def arrows(root: Path) -> list[Arrow]:
    """Every import statement's arrows in the ``spnkit`` package under ``root``."""
    modules = modules_under(root)
    found = []
    for importer, path in modules.items():
        rel = path.relative_to(root).as_posix()
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [Arrow(rel, node.lineno, importer, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    base = node.module
                for alias in node.names:
                    imported = base if alias.name == "*" else imported_from(base, alias.name, modules)
                    found.append(Arrow(rel, node.lineno, importer, imported))
    return found


# Arrows allowed against the rules, each for a reason (and held by its own test).
LAZY = {
    # spnkit.load: imported inside spnkit.__getattr__ when first used, never by `import spnkit`
    # (test_importing_spnkit_loads_no_engine), so plugins importing spnkit do not load the engine
    ("spnkit", "spnkit.engine.export"),
}


def violations(root: Path) -> list[str]:
    """One line per forbidden arrow: ``file:line: importer -> imported  [rule N: why; ...]``."""
    lines = []
    for arrow in arrows(root):
        if (arrow.importer, arrow.imported) in LAZY:
            continue
        broken = broken_rules(arrow.importer, arrow.imported)
        if broken:
            why = "; ".join(f"rule {rule.number}: {rule.why}" for rule in broken)
            lines.append(f"{arrow.path}:{arrow.line}: {arrow.importer} -> {arrow.imported}  [{why}]")
    return sorted(set(lines))


# ----------------------------------------------------------------------------- the real tree


def test_no_forbidden_import_arrows():
    found = violations(ROOT)
    assert not found, f"{len(found)} forbidden import(s):\n" + "\n".join(found)


def test_the_scan_sees_every_layer():
    """So the test above cannot pass by scanning nothing."""
    seen = {arrow.importer for arrow in arrows(ROOT)}
    for module in ("spnkit", "spnkit.core.system", "spnkit.core.build", "spnkit.builtin.orderings",
                   "spnkit.nn.attention", "spnkit.data.loader", "spnkit.engine.train", "spnkit.cli", "spnkit.testing",
                   "spnkit.codec.api"):
        assert module in seen, module
    assert any(a.importer == "spnkit.core.system" and a.imported == "spnkit.core.interfaces" for a in arrows(ROOT))


def test_importing_spnkit_loads_no_engine():
    code = ("import sys, spnkit; assert not [m for m in sys.modules if m.startswith('spnkit.engine')]; "
            "from spnkit.engine.export import load; assert spnkit.load is load")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------- the checker itself


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_imports_are_resolved_to_modules(tmp_path):
    write(tmp_path, {
        "spnkit/__init__.py": "from spnkit.core.hookspecs import hookimpl\n",
        "spnkit/core/__init__.py": "",
        "spnkit/core/hookspecs.py": "",
        "spnkit/core/build.py": "from . import hookspecs\nfrom .hookspecs import x\n",
        "spnkit/builtin/__init__.py": "",
        "spnkit/data/__init__.py": "class DataError(Exception):\n    pass\n",
        "spnkit/builtin/a.py": ("from spnkit import hookimpl\nfrom spnkit.core import build\n"
                                "from ..core import hookspecs as h\nimport spnkit.nn.layers as layers\n"
                                "from spnkit.data import config\nimport torch.nn\nfrom spnkit.data import DataError\n"),
    })
    got = {(a.importer, a.line, a.imported) for a in arrows(tmp_path)}
    assert got == {
        ("spnkit", 1, "spnkit.core.hookspecs"),
        ("spnkit.core.build", 1, "spnkit.core.hookspecs"),
        ("spnkit.core.build", 2, "spnkit.core.hookspecs"),
        ("spnkit.builtin.a", 1, "spnkit"),  # hookimpl is bound by spnkit/__init__.py
        ("spnkit.builtin.a", 2, "spnkit.core.build"),
        ("spnkit.builtin.a", 3, "spnkit.core.hookspecs"),
        ("spnkit.builtin.a", 4, "spnkit.nn.layers"),
        ("spnkit.builtin.a", 5, "spnkit.data.config"),  # a module that does not exist yet
        ("spnkit.builtin.a", 6, "torch.nn"),
        ("spnkit.builtin.a", 7, "spnkit.data"),  # DataError is bound by spnkit/data/__init__.py
    }
    assert violations(tmp_path) == [
        "spnkit/builtin/a.py:5: spnkit.builtin.a -> spnkit.data.config  "
        "[rule 3: spnkit.builtin may import only spnkit.core, spnkit.nn and spnkit itself]",
        "spnkit/builtin/a.py:7: spnkit.builtin.a -> spnkit.data  "
        "[rule 3: spnkit.builtin may import only spnkit.core, spnkit.nn and spnkit itself]"]


def test_a_planted_forbidden_import_fails_the_check(tmp_path):
    """A copy of the real tree plus one core module with three forbidden imports: the checker
    reports exactly those three (on top of whatever the real tree has)."""
    shutil.copytree(ROOT / "spnkit", tmp_path / "spnkit", ignore=shutil.ignore_patterns("__pycache__", "embedded"))
    write(tmp_path, {"spnkit/core/planted.py": (
        "from spnkit.engine import train\n"
        "\n"
        "\n"
        "def later():\n"
        "    from ..builtin import orderings\n"
        "    import spnkit.cli\n"
        "    from spnkit.data.config import DataConfig\n"
    )})
    planted = sorted(set(violations(tmp_path)) - set(violations(ROOT)))
    assert planted == [
        "spnkit/core/planted.py:1: spnkit.core.planted -> spnkit.engine.train  "
        "[rule 1: only spnkit.engine, spnkit.cli and spnkit.__main__ may import spnkit.engine or spnkit.cli; "
        "rule 2: spnkit.core may import only spnkit.core and spnkit.data.config]",
        "spnkit/core/planted.py:5: spnkit.core.planted -> spnkit.builtin.orderings  "
        "[rule 2: spnkit.core may import only spnkit.core and spnkit.data.config]",
        "spnkit/core/planted.py:6: spnkit.core.planted -> spnkit.cli  "
        "[rule 1: only spnkit.engine, spnkit.cli and spnkit.__main__ may import spnkit.engine or spnkit.cli; "
        "rule 2: spnkit.core may import only spnkit.core and spnkit.data.config]",
    ]


def test_every_rule_can_fire():
    cases = {
        ("spnkit.data.loader", "spnkit.engine.train"): [1, 5],
        ("spnkit.nn.attention", "spnkit.cli"): [1, 4],
        ("spnkit.core.build", "spnkit.data.loader"): [2],
        ("spnkit.core.build", "spnkit.testing"): [2],
        ("spnkit.builtin.pixelcnn", "spnkit.data.idx"): [3],
        ("spnkit.nn.attention", "spnkit.builtin.caches"): [4],
        ("spnkit.data.sources", "spnkit.builtin.orderings"): [5],
        ("spnkit.testing", "spnkit.nn.attention"): [6],
        ("spnkit.testing", "spnkit.cli"): [1, 6],
        ("spnkit.codec.api", "spnkit.builtin.pixelcnn"): [7],
        ("spnkit.codec.coding", "spnkit.engine.run"): [1, 7],
        ("spnkit.data.loader", "spnkit.codec.api"): [5],
        ("spnkit.core.system", "spnkit.codec.coding"): [2],
    }
    for (importer, imported), numbers in cases.items():
        assert [rule.number for rule in broken_rules(importer, imported)] == numbers, (importer, imported)
    allowed = [("spnkit.engine.run", "spnkit.cli"), ("spnkit.cli", "spnkit.engine.train"),
               ("spnkit.core.build", "spnkit.data.config"), ("spnkit.builtin.orderings", "spnkit"),
               ("spnkit.builtin.pixelcnn", "spnkit.nn.masked_conv"), ("spnkit.nn.attention", "spnkit.core.sampling"),
               ("spnkit.data.loader", "spnkit.core.recipe"), ("spnkit.testing", "spnkit.core.interfaces"),
               ("spnkit.core.system", "torch"), ("spnkit.codec.api", "spnkit.core.system"),
               ("spnkit.codec.api", "spnkit.data.config"), ("spnkit.engine.compression", "spnkit.codec"),
               ("spnkit.cli", "spnkit.codec.api")]
    for importer, imported in allowed:
        assert broken_rules(importer, imported) == [], (importer, imported)
