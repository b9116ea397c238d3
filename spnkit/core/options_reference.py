"""The option reference (``spnkit options``): every field of the recipe's sections and of each
plugin's ``Options``, with its type, default, valid range and one-line doc, read from the attrs
classes that validate recipes, so it cannot drift from what they accept.

A field documents itself in its ``attrs.field``: ``metadata={"doc": "one line"}``; its range is
its validator's ``.rule`` (``spnkit.core.validators``). A field that is itself an attrs class
(``[train]`` in a recipe, ``transformer`` in the hybrid decoder's options) is listed field by
field under its dotted name.
"""

from __future__ import annotations

import difflib
import json
import typing
from typing import Any

import attrs

from spnkit.core.plugins import KINDS, Registry
from spnkit.core.recipe import Recipe, Table

DOC = "doc"  # the metadata key of a field's one-line doc


@attrs.frozen
class Row:
    """One field: ``key`` (dotted below a nested table), what it takes, its default and range."""

    key: str
    type: str
    default: str
    valid: str
    doc: str


@attrs.frozen
class Section:
    """A titled list of fields: a recipe section or one plugin's options."""

    title: str
    summary: str
    rows: list[Row]


def doc(field: attrs.Attribute) -> str:
    """A field's one-line doc ("" when it has none)."""
    return field.metadata.get(DOC, "")


def valid(validator: Any) -> str:
    """The range a validator checks, in words ("" when it says none)."""
    if validator is None:
        return ""
    parts = getattr(validator, "_validators", None)  # attrs.validators.and_ (a list of validators)
    if parts is not None:
        return ", ".join(filter(None, map(valid, parts)))
    if hasattr(validator, "validator") and type(validator).__name__ == "_OptionalValidator":
        inner = valid(validator.validator)
        return f"{inner}, or unset" if inner else ""
    return getattr(validator, "rule", "")


def _types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a plugin's annotation that does not resolve: show it as written
        return {field.name: field.type for field in attrs.fields(cls)}


def _type_name(kind: Any) -> str:
    if isinstance(kind, str):
        return kind
    if kind is Table or attrs.has(kind):
        return "table"
    if getattr(kind, "__module__", "") == "builtins" and isinstance(kind, type):
        return kind.__name__
    return str(kind).replace("typing.", "").replace("spnkit.core.recipe.Table", "table")


def _value(value: Any) -> str:
    """A default as a recipe would write it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


def rows(cls: type, prefix: str = "") -> list[Row]:
    """Every field of the attrs class ``cls``, nested attrs classes field by field."""
    types = _types(cls)
    return [row for field in attrs.fields(cls) for row in field_rows(field, types.get(field.name), prefix)]


def field_rows(field: attrs.Attribute, kind: Any, prefix: str = "") -> list[Row]:
    """A field's row; a field holding an attrs class, then a row per field of it."""
    kind = field.type if kind is None else kind
    key, default = prefix + field.name, field.default
    if isinstance(default, attrs.Factory):
        default = default.factory(None) if default.takes_self else default.factory()
    nested = kind if attrs.has(kind) else type(default) if attrs.has(type(default)) else None
    if nested is not None:
        shown = "required" if default is attrs.NOTHING else "the fields below"
        return [Row(key, "table", shown, valid(field.validator), doc(field)), *rows(nested, key + ".")]
    shown = "required" if default is attrs.NOTHING else _value(default)
    return [Row(key, _type_name(kind), shown, valid(field.validator), doc(field))]


def recipe_sections() -> list[Section]:
    """The recipe's own fields: top-level keys, then each section (``[stages.NAME]`` for every
    stage); component tables (``{ plugin = "name", ... }``) point to the plugins' options."""
    top, sections, types = [], [], _types(Recipe)
    for field in attrs.fields(Recipe):
        kind = types[field.name]
        if attrs.has(kind):
            title, cls = field.name, kind
        elif typing.get_origin(kind) is dict and attrs.has(typing.get_args(kind)[1]):
            title, cls = f"{field.name}.NAME", typing.get_args(kind)[1]
        else:
            top += field_rows(field, kind)
            continue
        sections.append(Section(f"[{title}]", doc(field), rows(cls)))
    return [Section("top level", "keys outside any table", top), *sections]


def plugin_sections(registry: Registry, kinds: tuple[str, ...] = KINDS, names: list[str] | None = None) -> list[Section]:
    """The options of every plugin (of ``kinds``, named ``names``), kind by kind."""
    sections = []
    for kind in kinds:
        for name in registry.names(kind):
            if names is not None and name not in names:
                continue
            entry = registry.get(kind, name)
            version = f"{entry.provider.distribution} {entry.provider.version}".strip()
            title = f"{kind} {name!r} ({version})"
            section = _SECTIONS.get(entry.cls.Options)
            if section is not None:  # a backend's options are the recipe's [runtime] section
                sections.append(Section(title, f"{entry.summary} Options: the recipe's [{section}] section.", []))
            else:
                sections.append(Section(title, entry.summary, rows(entry.cls.Options)))
    return sections


_SECTIONS = {kind: name for name, kind in _types(Recipe).items() if attrs.has(kind)}


def _summary(cls: type, fallback: str) -> str:
    text = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(text.replace("``", "`").split()) if text else fallback


def lookup(registry: Registry, name: str) -> list[Section]:
    """The sections ``spnkit options NAME`` shows: a recipe section (``train``, ``stages``,
    ...) or every plugin called ``name``; ``LookupError`` naming what exists otherwise."""
    sections = [s for s in recipe_sections() if s.title.strip("[]").split(".")[0] == name]
    sections += plugin_sections(registry, names=[name])
    if sections:
        return sections
    known = [s.title.strip("[]").split(".")[0] for s in recipe_sections()[1:]]
    plugins = sorted({n for kind in KINDS for n in registry.names(kind)})
    close = difflib.get_close_matches(name, known + plugins, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise LookupError(f"{name!r} is neither a recipe section nor a plugin; {hint}sections: {', '.join(known)}; "
                      f"plugins: {', '.join(plugins)}")


def render(sections: list[Section]) -> str:
    """Plain text: a title line per section, then one line per field, in aligned columns."""
    out = []
    for section in sections:
        out.append(f"{section.title}: {section.summary}" if section.summary else section.title)
        table = [("key", "type", "default", "valid", "doc")]
        table += [(r.key, r.type, r.default, r.valid or "-", r.doc) for r in section.rows]
        if len(table) == 1:
            out.append("  (no options)" if not section.summary.endswith("section.") else "")
        else:
            widths = [max(len(row[i]) for row in table) for i in range(4)]
            for row in table:
                out.append(("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4]).rstrip())
        out.append("")
    return "\n".join(out)
