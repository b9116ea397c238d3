"""Recipes that extend others: merged key by key, chains, cycles and bad bases as error lines,
and the shipped recipes that use it equal to the hand-written recipes they replaced."""

from pathlib import Path

import pytest
import tomli_w

from spnkit import cli
from spnkit.core import build
from spnkit.core.recipe import RecipeError, merge, read, tomllib  # tomli before Python 3.11
from spnkit.engine.checkpoint import stage_fingerprint

ROOT = Path(__file__).parents[1]
TWINS = Path(__file__).parent / "fixtures" / "handwritten"  # the recipes as written before `extends`, and bases


@pytest.mark.parametrize("name", ["celebahq256_5bit", "imagenet256", "quickstart_conditional"])
def test_a_merged_recipe_equals_its_hand_written_twin(name, tmp_path):
    """The shipped recipe, over its base as it was when the twin was written by hand (kept in
    fixtures/handwritten/bases, so a later change to the base, which the shipped recipe then
    follows, does not move the comparison), resolves and fingerprints as the twin does."""
    child = (ROOT / "recipes" / f"{name}.toml").read_text()
    assert "extends" in child
    for base in (TWINS / "bases").glob("*.toml"):
        (tmp_path / base.name).write_text(base.read_text())
    (tmp_path / f"{name}.toml").write_text(child)
    merged = build.load(str(tmp_path / f"{name}.toml"))
    twin = build.load(str(TWINS / f"{name}.toml"))
    assert merged.to_dict() == twin.to_dict()
    for stage in twin.stages:
        assert stage_fingerprint(merged, stage) == stage_fingerprint(twin, stage)


def small() -> dict:
    return {
        "name": "base",
        "data": {"source": "fashion_mnist", "height": 8, "width": 8, "channels": 1, "bits": 8},
        "quantizer": {"plugin": "depth_split", "splits": [8]},
        "stages": {"main": {"decoder": {"plugin": "pixelcnn", "layers": 2, "channels": 8}}},
        "train": {"steps": 10, "batch_size": 4},
    }


def write(path: Path, recipe: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(recipe))
    return path


def test_tables_merge_key_by_key_and_a_table_naming_a_plugin_replaces():
    base = {"train": {"steps": 10, "batch_size": 4}, "stages": {"main": {
        "decoder": {"plugin": "hybrid", "transformer": {"layers": 2, "heads": 4}, "pixelcnn": {"layers": 3}},
        "ordering": {"plugin": "subscale", "factor": 2}}}}
    child = {"train": {"steps": 20}, "stages": {"main": {
        "decoder": {"transformer": {"layers": 5}},
        "ordering": {"plugin": "raster"}}}}
    assert merge(base, child) == {"train": {"steps": 20, "batch_size": 4}, "stages": {"main": {
        "decoder": {"plugin": "hybrid", "transformer": {"layers": 5, "heads": 4}, "pixelcnn": {"layers": 3}},
        "ordering": {"plugin": "raster"}}}}
    assert base["train"] == {"steps": 10, "batch_size": 4}  # the base is left as it was


def test_a_chain_resolves_relative_to_each_recipe(tmp_path):
    write(tmp_path / "bases" / "root.toml", small())
    write(tmp_path / "bases" / "middle.toml", {"extends": "root.toml", "train": {"steps": 20}})
    leaf = write(tmp_path / "leaf.toml", {"extends": "bases/middle.toml", "name": "leaf",
                                          "stages": {"main": {"decoder": {"layers": 3}}}})
    resolved = build.load(str(leaf), ["train.batch_size=2"])
    assert resolved.recipe.name == "leaf"
    assert (resolved.recipe.train.steps, resolved.recipe.train.batch_size) == (20, 2)
    assert resolved.stages["main"].decoder.options.layers == 3
    assert resolved.stages["main"].decoder.options.channels == 8
    assert "extends" not in read(leaf)


def test_show_prints_the_whole_resolved_recipe(tmp_path, capsys):
    write(tmp_path / "root.toml", small())
    leaf = write(tmp_path / "leaf.toml", {"extends": "root.toml", "train": {"steps": 20}})
    assert cli.main(["show", str(leaf), "train.batch_size=2"]) == 0
    shown = capsys.readouterr().out
    assert "extends" not in shown and "[stages.main.decoder]" in shown and "head_channels = 96" in shown
    again = write(tmp_path / "again.toml", {})
    again.write_text(shown)
    assert build.load(str(again)).to_dict() == build.load(str(leaf), ["train.batch_size=2"]).to_dict()


@pytest.mark.parametrize("files, message", [
    ({"a.toml": {"extends": "a.toml"}}, "a.toml: extends 'a.toml': a cycle ({d}/a.toml -> {d}/a.toml)"),
    ({"a.toml": {"extends": "b.toml"}, "b.toml": {"extends": "c.toml"}, "c.toml": {"extends": "./a.toml"}},
     "c.toml: extends './a.toml': a cycle ({d}/a.toml -> {d}/b.toml -> {d}/c.toml -> {d}/a.toml)"),
    ({"a.toml": {"extends": "missing.toml"}}, "a.toml: extends 'missing.toml': no recipe file {d}/missing.toml"),
    ({"a.toml": {"extends": 3}}, "a.toml: extends: expected the path of another recipe, relative to this one, "
                                 "got int 3"),
])
def test_bad_extends_is_one_error_line(tmp_path, capsys, files, message):
    for name, recipe in files.items():
        write(tmp_path / name, recipe)
    assert cli.main(["check", str(tmp_path / "a.toml")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {tmp_path}/" + message.format(d=tmp_path)]


def test_a_bad_base_is_named(tmp_path):
    (tmp_path / "root.toml").write_text("name = \n")
    write(tmp_path / "leaf.toml", {"extends": "root.toml"})
    with pytest.raises(RecipeError, match=r"root\.toml: invalid TOML"):
        build.load(str(tmp_path / "leaf.toml"))


def test_a_bundled_recipe_extends_its_bundled_base(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no recipes/ here: the bare name is the bundled recipe
    assert cli.main(["show", "quickstart_conditional"]) == 0
    shown = build.validate(tomllib.loads(capsys.readouterr().out))
    assert shown.to_dict() == build.load(str(ROOT / "recipes" / "quickstart_conditional.toml")).to_dict()


def test_a_copy_of_a_bundled_recipe_finds_its_base_among_the_bundled_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["recipes", "quickstart_conditional"]) == 0
    (tmp_path / "mine.toml").write_text(capsys.readouterr().out + "\n[train]\nsteps = 7\n")
    assert cli.main(["show", "mine.toml"]) == 0
    mine = build.validate(tomllib.loads(capsys.readouterr().out))
    assert mine.recipe.train.steps == 7
    shipped = build.load(str(ROOT / "recipes" / "quickstart_conditional.toml"), ["train.steps=7"])
    assert mine.to_dict() == shipped.to_dict()
    beside = read(ROOT / "recipes" / "quickstart.toml")
    beside["train"]["batch_size"] = 5
    (tmp_path / "quickstart.toml").write_text(tomli_w.dumps(beside))  # a base beside it comes first
    assert cli.main(["show", "mine.toml"]) == 0
    assert build.validate(tomllib.loads(capsys.readouterr().out)).recipe.train.batch_size == 5


def test_extends_takes_a_bundled_recipe_by_its_bare_name_as_spnkit_run_does(tmp_path, capsys):
    write(tmp_path / "mine.toml", {"extends": "quickstart", "train": {"steps": 9}})
    assert cli.main(["show", str(tmp_path / "mine.toml")]) == 0
    mine = build.validate(tomllib.loads(capsys.readouterr().out))
    assert mine.to_dict() == build.load(str(ROOT / "recipes" / "quickstart.toml"), ["train.steps=9"]).to_dict()
    write(tmp_path / "quickstart.toml", {**read(ROOT / "recipes" / "quickstart.toml"), "seed": 77})
    assert build.load(str(tmp_path / "mine.toml")).recipe.seed == 77  # one beside it comes first
