"""`spnkit options`: every field of the recipe's sections and of every built-in plugin's Options,
read from the attrs classes, each with a doc line, its type, default and range."""

import typing

import attrs
import pytest

from spnkit import cli
from spnkit.core import options_reference
from spnkit.core.plugins import KINDS, default_registry
from spnkit.core.recipe import Recipe, TrainConfig


def every_field(cls, prefix=""):
    """(dotted key, attrs field) of every field of ``cls``, nested attrs classes field by field."""
    for field in attrs.fields(cls):
        yield prefix + field.name, field
        default = field.default
        if isinstance(default, attrs.Factory) and not default.takes_self and attrs.has(type(default.factory())):
            yield from every_field(type(default.factory()), f"{prefix}{field.name}.")


def builtin_classes():
    registry = default_registry()
    classes = {"recipe": Recipe}
    for name, kind in typing.get_type_hints(Recipe).items():
        if attrs.has(kind):
            classes[f"[{name}]"] = kind
    classes["[stages.NAME]"] = typing.get_args(typing.get_type_hints(Recipe)["stages"])[1]
    for kind in KINDS:
        for name in registry.names(kind):
            classes[f"{kind} {name}"] = registry.get(kind, name).cls.Options
    return classes


def test_every_builtin_field_has_a_doc_line_and_is_listed(capsys):
    classes = builtin_classes()
    assert {"[train]", "[data]", "[eval]", "[sample]", "[stages.NAME]", "decoder hybrid"} <= classes.keys()
    undocumented = [f"{where}: {key}" for where, cls in classes.items() for key, field in every_field(cls)
                    if not field.metadata.get(options_reference.DOC, "").strip()]
    assert not undocumented, "fields without metadata={'doc': ...}:\n" + "\n".join(undocumented)
    assert cli.main(["options"]) == 0
    shown = capsys.readouterr().out.splitlines()
    for where, cls in classes.items():
        fields = [(f.name, f) for f in attrs.fields(Recipe)] if cls is Recipe else every_field(cls)
        for key, field in fields:
            doc = field.metadata[options_reference.DOC]
            row = any(line.split()[:1] == [key] and line.endswith(doc) for line in shown)
            section = any(line.startswith(f"[{key}") and line.endswith(f"]: {doc}") for line in shown)
            assert row or section, (where, key)


def test_a_row_gives_type_default_range_and_doc():
    rows = {row.key: row for row in options_reference.rows(TrainConfig)}
    assert rows["ema"] == options_reference.Row(
        "ema", "float", "0.9999", "in [0, 1) (0: no averaging; 1 would never move)",
        attrs.fields_dict(TrainConfig)["ema"].metadata["doc"])
    assert rows["checkpoint_every"].valid == ">= 1"


def test_one_plugin_or_section(capsys):
    assert cli.main(["options", "hybrid"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("decoder 'hybrid' (spnkit ")
    assert "transformer.heads           int    4                 divides channels" in out
    assert "pixelcnn.filter_size        int    3                 odd, >= 1, <= 63" in out
    assert cli.main(["options", "train"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[train]: ") and "checkpoint_every" in out and "hybrid" not in out


@pytest.mark.parametrize("name, hint", [("trian", "did you mean 'train'?"), ("hybird", "did you mean 'hybrid'?")])
def test_an_unknown_name_is_one_error_line(capsys, name, hint):
    assert cli.main(["options", name]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: spnkit options: {name!r} is neither") and hint in err[0]
