"""spnkit sample --guidance and the no-label figure of spnkit eval, on a tiny class-conditional
run trained with dropped labels."""

import json
import math

import numpy as np
import pytest
import tomli_w
import torch
from PIL import Image

import spnkit
from spnkit import cli
from spnkit.core import build
from spnkit.data.loader import exact_batches
from spnkit.data.sources import load_split
from test_engine import RECIPE
from test_export import short_recipe

LABELS = {"plugin": "class_embedding", "classes": 10, "channels": 4, "drop_labels": 0.5}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guided")
    path = short_recipe(folder, conditioner=LABELS)
    assert cli.main(["train", str(path), "--out", str(folder / "run"), "--quiet"]) == 0
    return path, folder / "run"


def sampled(trained, tmp_path, name, *flags):
    path, out = trained
    target = tmp_path / f"{name}.png"
    assert cli.main(["sample", str(path), "--out", str(out), "--class", "1", "--count", "3", "--quiet",
                     "-o", str(target), *flags]) == 0
    return np.asarray(Image.open(target))


def test_guidance_zero_is_plain_conditional_sampling_and_guidance_changes_it(trained, tmp_path):
    plain = sampled(trained, tmp_path, "plain")
    assert np.array_equal(sampled(trained, tmp_path, "zero", "--guidance", "0"), plain)
    # after 4 steps the label embeddings have barely left zero: a large weight shows them
    assert not np.array_equal(sampled(trained, tmp_path, "strong", "--guidance", "1000"), plain)


def test_eval_gives_the_no_label_figure_beside_the_conditional_one(trained, capsys):
    path, out = trained
    assert cli.main(["eval", str(path), "--out", str(out), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["conditional"] and result["no_label"]["stages"].keys() == {"low", "high"}
    assert result["no_label"]["test_bits_per_dim"] != result["test_bits_per_dim"]

    # the figure is the model's p(x) under "no label", scored here on the same 20 test images
    resolved = build.load(str(path))
    pipeline = spnkit.load(out, device="cpu")
    data = resolved.recipe.data
    batch = next(exact_batches(load_split(data, "test").shards, 20, data.shape, side=resolved.side))
    levels = data.to_levels(batch["images"])
    with torch.no_grad():
        nats = pipeline.log_prob(levels, torch.full((20,), -1))
    bits = -sum(v.double().sum() for v in nats.values()).item() / (20 * levels[0].numel() * math.log(2))
    assert result["no_label"]["test_bits_per_dim"] == pytest.approx(bits, rel=1e-9)

    assert cli.main(["eval", str(path), "--out", str(out), "--quiet"]) == 0
    assert "\nwithout labels ('no label' given): test bits/dim " in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--guidance", "nan"], "error: --guidance: must be a finite number, got nan"),
    (["--guidance", "2", "stages.low.conditioner.null_class=false", "stages.low.conditioner.drop_labels=0.0"],
     "error: --guidance: stages.low.conditioner has no 'no label' row (null_class = false)"),
])
def test_bad_guidance_is_one_error_line(trained, capsys, flags, message):
    path, out = trained
    assert cli.main(["sample", str(path), "--out", str(out), "--class", "1", *flags]) == 2
    assert capsys.readouterr().err.splitlines() == [message]


def test_guidance_needs_a_class_conditional_recipe(tmp_path, capsys):
    path = tmp_path / "plain.toml"
    path.write_text(tomli_w.dumps(RECIPE))
    assert cli.main(["sample", str(path), "--out", str(tmp_path / "run"), "--guidance", "1"]) == 2
    assert "error: --guidance: the recipe's stages are not class-conditional" in capsys.readouterr().err
