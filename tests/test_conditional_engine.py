"""Class-conditional recipes end to end: labels from the data into training, conditional
bits/dim, one grid row per class, and one-line errors for bad labels."""

import copy

import numpy as np
import pytest
import tomli_w
from PIL import Image

from spnkit import cli
from spnkit.engine import images
from spnkit.engine.images import save_grid
from spnkit.data.writer import Geometry, write_shards
from test_engine import RECIPE

CONDITIONER = {"plugin": "class_embedding", "classes": 10, "channels": 4}


def conditional_recipe(tmp_path, data=None) -> str:
    recipe = copy.deepcopy(RECIPE)
    for stage in recipe["stages"].values():
        stage["conditioner"] = dict(CONDITIONER)
    recipe["data"].update(data or {})
    path = tmp_path / "conditional.toml"
    path.write_text(tomli_w.dumps(recipe))
    return str(path)


def names_by_row(picture: Image.Image, rows: int, grid_width: int) -> bool:
    """Whether the margin left of a grid ``grid_width`` wide holds dark (text) pixels beside
    each of its ``rows`` rows."""
    margin = np.asarray(picture.convert("L"))[:, : picture.width - grid_width]
    band = picture.height // rows
    inked = [(margin[r * band:(r + 1) * band] < 128).any() for r in range(rows)]
    return all(inked)


def test_conditional_run_eval_and_class_rows(tmp_path, capsys, monkeypatch):
    recipe, out = conditional_recipe(tmp_path), str(tmp_path / "run")
    assert cli.main(["run", recipe, "--out", out, "--quiet", "train.steps=3", "sample.count=20"]) == 0
    summary = __import__("json").loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["conditional"] is True and summary["images"] == 100
    assert cli.main(["eval", recipe, "--out", out, "--quiet", "--bits-map", "2"]) == 0  # given the labels
    assert Image.open(tmp_path / "run" / "bits_map.png").height > 200
    grid = Image.open(tmp_path / "run" / "samples.png")
    # 2 per class, 10 rows of 28+2 pixels, right of a margin with the rows' class names
    assert grid.height == 2 * (10 * 30 + 2) and grid.width - 2 * (2 * 30 + 2) > 40
    assert names_by_row(grid, 10, 2 * (2 * 30 + 2))
    target = tmp_path / "bags.png"
    drawn = []
    monkeypatch.setattr(images, "save_grid", lambda *a, **k: drawn.append(k["row_names"]) or save_grid(*a, **k))
    assert cli.main(["sample", recipe, "--out", out, "--class", "bag", "--class", "0", "--count", "3",
                     "--output", str(target)]) == 0
    assert drawn == [["Bag", "T-shirt/top"]]
    labelled = Image.open(target)
    assert labelled.height == 2 * (2 * 30 + 2) and names_by_row(labelled, 2, 2 * (3 * 30 + 2))
    capsys.readouterr()
    assert cli.main(["sample", recipe, "--out", out, "--class", "shoe"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --class: 'shoe' is not a class name or an id in 0..9; the classes are 0: T-shirt/top")
    assert cli.main(["sample", recipe, "--out", out, "--class", "10"]) == 2
    with pytest.warns(UserWarning, match="'no label' row is untrained"):
        assert cli.main(["sample", recipe, "--out", out, "--class", "none", "--count", "2"]) == 0


def test_class_none_needs_a_no_label_row(tmp_path, capsys):
    recipe = copy.deepcopy(RECIPE)
    for stage in recipe["stages"].values():
        stage["conditioner"] = {**CONDITIONER, "null_class": False}
    path = tmp_path / "no_null.toml"
    path.write_text(tomli_w.dumps(recipe))
    assert cli.main(["sample", str(path), "--out", str(tmp_path / "run"), "--class", "none"]) == 2
    assert capsys.readouterr().err.startswith("error: --class none: stages.low.conditioner has no 'no label' row")


def test_class_on_an_unconditional_recipe(tmp_path, capsys):
    path = tmp_path / "plain.toml"
    path.write_text(tomli_w.dumps(RECIPE))
    assert cli.main(["sample", str(path), "--out", str(tmp_path / "none"), "--class", "1"]) == 2
    assert "not class-conditional" in capsys.readouterr().err


@pytest.mark.parametrize(("labels", "message"), [
    (np.array([0, 3, 12, 1, 2, 5, 4, 7]), "has label 12, out of range for 10 classes"),
    (None, "has no label (.cls), but the recipe's stages are class-conditional (10 classes)"),
])
def test_bad_labels_are_one_error_line(tmp_path, capsys, labels, message):
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    arrays = {"data": images} if labels is None else {"data": images, "labels": labels}
    np.savez(tmp_path / "images.npz", **arrays)
    write_shards([tmp_path / "images.npz"], tmp_path / "shards", Geometry(None), split="train", progress=False)
    recipe = conditional_recipe(tmp_path, {"source": "shards", "train": str(tmp_path / "shards" / "train-000000.tar")})
    assert cli.main(["train", recipe, "--out", str(tmp_path / "run"), "--quiet", "train.steps=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: data: sample 'images_") and message in err[0]


def test_vector_side_information_from_shards(tmp_path, capsys):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    vectors = rng.normal(size=(12, 3)).astype(np.float32)
    np.savez(tmp_path / "images.npz", data=images, vectors=vectors)
    manifest = write_shards([tmp_path / "images.npz"], tmp_path / "shards", Geometry(None), split="train=8,test=rest",
                            progress=False)
    assert manifest["vectors"] == 3
    recipe = copy.deepcopy(RECIPE)
    for stage in recipe["stages"].values():
        stage["conditioner"] = {"plugin": "vector", "size": 3, "channels": 4}
    recipe["data"].update({"source": "shards", "train": str(tmp_path / "shards" / "train-000000.tar"),
                           "test": str(tmp_path / "shards" / "test-000000.tar")})
    recipe["eval"]["max_images"] = 0
    path = tmp_path / "vectors.toml"
    path.write_text(tomli_w.dumps(recipe))
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet", "train.steps=2", "sample.count=2"]) == 0
    summary = __import__("json").loads((out / "summary.json").read_text())
    assert summary["conditional"] is True and summary["images"] == 4
    assert (out / "samples.png").exists()
    capsys.readouterr()
    wrong = copy.deepcopy(recipe)
    for stage in wrong["stages"].values():
        stage["conditioner"]["size"] = 5
    path.write_text(tomli_w.dumps(wrong))
    assert cli.main(["train", str(path), "--out", str(tmp_path / "wrong"), "--quiet", "train.steps=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has a vector of 3 values, the recipe's conditioner takes 5" in err[0]
