"""The recipes that ship with spnkit: listed by `spnkit recipes`, found by bare name from any
folder; a path still means the file."""

import os
from pathlib import Path

import pytest

from spnkit import bundled, cli

ROOT = Path(__file__).resolve().parents[1]


def test_every_recipe_of_the_repository_ships():
    assert bundled.names() == sorted(p.stem for p in (ROOT / "recipes").glob("*.toml"))
    assert "quickstart" in bundled.names()


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", ["quickstart", "quickstart.toml"])
def test_a_bare_name_is_the_bundled_recipe(elsewhere, name, capsys):
    assert Path(bundled.find(name)) == bundled.FOLDER / "quickstart.toml"
    assert cli.main(["check", name]) == 0
    assert "valid; image 1x28x28" in capsys.readouterr().out


def test_a_file_of_that_name_wins_over_the_bundled_recipe(elsewhere):
    (elsewhere / "quickstart.toml").write_text("name = 'mine'\n")
    assert bundled.find("quickstart.toml") == "quickstart.toml"


def test_an_unknown_bare_name_is_one_error_line_listing_the_bundled_ones(elsewhere, capsys):
    assert cli.main(["check", "quickstrat"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: quickstrat: no such recipe file") and "quickstart_conditional" in line


def test_a_missing_path_to_a_bundled_name_says_how_to_name_it(elsewhere, capsys):
    assert cli.main(["check", os.path.join("recipes", "quickstart.toml")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "spnkit ships a recipe of that name: give it as 'quickstart'" in line


def test_spnkit_recipes_lists_each_with_what_it_is_and_prints_one(capsys):
    assert cli.main(["recipes"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line and line[0] != "("}
    assert set(rows) == set(bundled.names())
    assert "Fashion-MNIST" in rows["quickstart"]
    assert cli.main(["recipes", "quickstart"]) == 0
    assert capsys.readouterr().out == (bundled.FOLDER / "quickstart.toml").read_text()
