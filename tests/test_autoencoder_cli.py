"""A tiny PixelCNN Auto-Encoder run end to end: its figures say "given the code", ``spnkit
reconstruct`` draws an image then samples given its code, ``spnkit sample --interpolate`` walks
the line between two codes with the same noise in every column."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import spnkit
from spnkit import cli
from spnkit.core import build
from spnkit.data.loader import exact_batches
from spnkit.data.sources import load_split
from spnkit.engine import autoencoder, evaluate
from test_autoencoder import randomized
from test_export import short_recipe

CODE = {"plugin": "image_encoder", "bottleneck": 4, "channels": 4, "layers": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("autoencoder")
    path = short_recipe(folder, conditioner=CODE)
    assert cli.main(["run", str(path), "--out", str(folder / "run"), "--quiet"]) == 0
    batch = next(iter(exact_batches(load_split(build.load(str(path)).recipe.data, "test").shards, 2, (1, 28, 28))))
    shoes = []
    for index in (0, 1):  # two test images as files
        shoes.append(folder / f"image{index}.png")
        Image.fromarray(batch["images"][index, 0].numpy()).save(shoes[-1])
    return path, folder / "run", shoes


def test_the_figures_are_bits_per_dim_given_the_code_under_their_own_key(trained, capsys):
    path, out, _ = trained
    summary = json.loads((out / "summary.json").read_text())
    assert "test_bits_per_dim" not in summary and summary["given_code"] == ["low", "high"]
    assert summary[evaluate.GIVEN_CODE] == pytest.approx(sum(summary["stages"].values()))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "test_bits_per_dim" not in records[-1] and evaluate.GIVEN_CODE in records[-1]
    capsys.readouterr()
    assert cli.main(["eval", str(path), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"test bits/dim given the code {summary[evaluate.GIVEN_CODE]:.4f}")
    assert "not a likelihood of the images" in text


def test_reconstruct_draws_each_image_then_samples_given_its_code(trained, tmp_path):
    path, out, shoes = trained
    target = tmp_path / "grid.png"
    assert cli.main(["reconstruct", str(path), *map(str, shoes), "--samples", "3", "--out", str(out),
                     "-o", str(target)]) == 0
    picture = np.asarray(Image.open(target))
    assert picture.shape == (2 * (2 * 30 + 2), 2 * (4 * 30 + 2))  # 2 rows, image + 3 samples, scale 2
    first = picture[4:60:2, 4:60:2]  # the first row's input, unscaled
    assert np.array_equal(first, np.asarray(Image.open(shoes[0])))


def test_reconstruct_of_a_wrong_size_is_one_error_line(trained, tmp_path, capsys):
    path, out, _ = trained
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((14, 14), np.uint8)).save(small)
    capsys.readouterr()
    assert cli.main(["reconstruct", str(path), str(small), "--out", str(out), "-o", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: reconstruct: {small} is 14x14, the recipe's images are 28x28"]
    assert not (tmp_path / "g.png").exists()


def test_interpolation_endpoints_are_samples_given_each_images_own_code(trained):
    path, out, shoes = trained
    resolved = build.load(str(out / "recipe.toml"))
    pipeline = spnkit.load(out, device="cpu")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():  # weights at random: after 4 steps of training the code hardly matters yet
        for parameter in pipeline.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    a, b = autoencoder.endpoints(resolved, pipeline, str(shoes[0]), str(shoes[1]))
    drawn = autoencoder.interpolation(resolved, pipeline, a, b, steps=3, rows=2, seed=5).reshape(2, 3, 1, 28, 28)
    for column, image in ((0, shoes[0]), (2, shoes[1])):
        levels = autoencoder.read_images([image], resolved, "test")
        codes = autoencoder.repeat(pipeline.encode(levels), 2)
        own = pipeline.sample(2, (1, 28, 28), generator=torch.Generator().manual_seed(5), side=codes,
                              temperatures={name: s.temperature for name, s in resolved.recipe.stages.items()})
        assert np.array_equal(drawn[:, column], resolved.recipe.data.to_pixels(own).numpy())
    assert not np.array_equal(drawn[:, 0], drawn[:, 2])


def test_the_same_code_at_both_ends_gives_equal_columns(trained):
    """Every column is drawn with the same noise: only the code changes along a row."""
    path, out, shoes = trained
    resolved = build.load(str(out / "recipe.toml"))
    pipeline = spnkit.load(out, device="cpu")
    a, _ = autoencoder.endpoints(resolved, pipeline, str(shoes[0]), str(shoes[1]))
    drawn = autoencoder.interpolation(resolved, pipeline, a, a, steps=3, rows=2, seed=5).reshape(2, 3, 1, 28, 28)
    assert np.array_equal(drawn[:, 0], drawn[:, 1]) and np.array_equal(drawn[:, 0], drawn[:, 2])


def test_sample_interpolate_writes_a_row_per_count_and_a_column_per_step(trained, tmp_path):
    path, out, shoes = trained
    target = tmp_path / "line.png"
    assert cli.main(["sample", str(path), "--out", str(out), "--interpolate", *map(str, shoes), "--steps", "4",
                     "--count", "2", "--quiet", "-o", str(target)]) == 0
    assert np.asarray(Image.open(target)).shape == (2 * (2 * 30 + 2), 2 * (4 * 30 + 2))


VECTORS = {
    "data": {"height": 4, "width": 4, "channels": 1, "bits": 2},
    "quantizer": {"plugin": "depth_split", "splits": [2]},
    "stages": {"main": {"plane": 0, "ordering": {"plugin": "raster"}, "conditioner": {"plugin": "vector", "size": 3},
                        "decoder": {"plugin": "gated_pixelcnn", "layers": 2, "channels": 12,
                                    "residual_channels": 12}}},
}


def test_vector_interpolation_reads_rows_of_an_array_and_ends_at_them(tmp_path):
    resolved = build.validate(VECTORS)
    pipeline = randomized(VECTORS)
    rows = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.save(tmp_path / "v.npy", rows)
    a, b = autoencoder.endpoints(resolved, pipeline, f"{tmp_path / 'v.npy'}:1", f"{tmp_path / 'v.npy'}:4")
    assert torch.equal(a, torch.from_numpy(rows[1:2])) and torch.equal(b, torch.from_numpy(rows[4:5]))
    drawn = autoencoder.interpolation(resolved, pipeline, a, b, steps=4, rows=3, seed=2).reshape(3, 4, 1, 4, 4)
    own = pipeline.sample(3, (1, 4, 4), generator=torch.Generator().manual_seed(2), side=b.expand(3, -1))
    assert np.array_equal(drawn[:, 3], resolved.recipe.data.to_pixels(own).numpy())


@pytest.mark.parametrize("flags, message", [
    (["--interpolate", "a.png", "b.png", "--steps", "1"], "error: --steps: must be in [2, 64] points along the line, got 1"),
    (["--interpolate", "a.png", "b.png", "--class", "1"], "error: --interpolate: cannot be combined with"),
])
def test_bad_interpolation_flags_are_one_error_line(trained, flags, message, capsys):
    path, out, _ = trained
    capsys.readouterr()
    assert cli.main(["sample", str(path), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(message)


def test_interpolating_an_unconditional_recipe_is_one_error_line(tmp_path, capsys):
    path = short_recipe(tmp_path)
    assert cli.main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet", "train.steps=2"]) == 0
    capsys.readouterr()
    assert cli.main(["sample", str(path), "--out", str(tmp_path / "run"), "train.steps=2",
                     "--interpolate", "a.png", "b.png"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --interpolate: the recipe's stages are unconditional; interpolation needs a continuous conditioner "
        "(vector, image_encoder)"]


def test_compressing_with_an_auto_encoder_is_one_error_line(trained, capsys):
    path, out, shoes = trained
    capsys.readouterr()
    assert cli.main(["compress", str(path), str(shoes[0]), "-o", str(out.parent / "x.spnz"), "--run", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].endswith("are given the code of their own input; "
                                             "the codec codes unconditional systems only")


def test_the_bits_map_titles_say_given_the_code(trained, monkeypatch):
    path, out, _ = trained
    drawn = {}
    monkeypatch.setattr("spnkit.engine.plots.plot_bits_map",
                        lambda images, bits, target, titles=None: drawn.update(titles=titles, bits=bits))
    assert cli.main(["eval", str(path), "--out", str(out), "--quiet", "--bits-map", "2"]) == 0
    per_dim = drawn["bits"].sum(axis=(1, 2)) / (28 * 28)
    assert drawn["titles"] == [f"test image {k}: {d:.3f} bits/dim given its code" for k, d in enumerate(per_dim)]


def test_check_names_each_stage_s_conditioner(trained, capsys):
    path, _, _ = trained
    assert cli.main(["check", str(path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("conditioner")]
    assert len(rows) == 2 and all("image_encoder" in row and "bottleneck=4" in row for row in rows)


def test_reconstruct_and_interpolate_show_a_bar_over_every_subpixel_drawn(trained, tmp_path, capsys):
    import re

    path, out, shoes = trained
    capsys.readouterr()
    assert cli.main(["reconstruct", str(path), *map(str, shoes), "--samples", "2", "--out", str(out),
                     "-o", str(tmp_path / "grid.png")]) == 0
    # two stages of 28x28x1 subpixels; the 2 x 2 samples are drawn together
    assert re.search(r"sample 4 images: 100%.*1\.57k/1\.57k.*images/s", capsys.readouterr().err)
    assert cli.main(["sample", str(path), "--interpolate", *map(str, shoes), "--steps", "3", "--count", "1",
                     "--out", str(out), "-o", str(tmp_path / "line.png")]) == 0
    assert re.search(r"sample 3 images: 100%.*4\.70k/4\.70k.*images/s", capsys.readouterr().err)  # 3 columns
    assert cli.main(["reconstruct", str(path), str(shoes[0]), "--samples", "1", "--out", str(out), "--quiet",
                     "-o", str(tmp_path / "quiet.png")]) == 0
    assert capsys.readouterr().err == ""


def test_reconstruct_refuses_an_output_that_is_no_png_file(trained, tmp_path, capsys):
    path, out, shoes = trained
    capsys.readouterr()
    for target in (tmp_path, tmp_path / "grid.jpeg.txt"):
        assert cli.main(["reconstruct", str(path), str(shoes[0]), "--out", str(out), "--quiet",
                         "-o", str(target)]) == 2
        assert capsys.readouterr().err.startswith("error: --output: ")
    assert list(tmp_path.iterdir()) == []
