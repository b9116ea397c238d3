"""What a run leaves for a person: the sampling progress bar, `spnkit sample` never replacing
the run's own samples.png."""

import json
import re

import pytest
import tomli_w

from spnkit import cli
from test_engine import RECIPE


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny two-stage run, trained for a few steps: (recipe path, out folder)."""
    folder = tmp_path_factory.mktemp("run")
    recipe = folder / "tiny.toml"
    recipe.write_text(tomli_w.dumps(RECIPE))
    out = folder / "out"
    assert cli.main(["run", str(recipe), "--out", str(out), "--quiet", "train.steps=2", "sample.count=1"]) == 0
    return recipe, out


def test_sample_shows_a_bar_over_every_subpixel_and_keeps_the_runs_samples(trained, capsys):
    recipe, out = trained
    capsys.readouterr()
    before = (out / "samples.png").read_bytes()
    assert cli.main(["sample", str(recipe), "--out", str(out), "--count", "2"]) == 0
    captured = capsys.readouterr()
    # two stages of 28x28x1 subpixels each: the bar ends at 1568 of 1568, with the images' rate
    assert re.search(r"sample 2 images: 100%.*1\.57k/1\.57k.*images/s", captured.err), captured.err
    assert (out / "samples.png").read_bytes() == before
    assert captured.out.strip() == f"wrote {out / 'sampled-1.png'}"
    assert cli.main(["sample", str(recipe), "--out", str(out), "--count", "1", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.strip() == f"wrote {out / 'sampled-2.png'}"
    assert (out / "sampled-1.png").exists() and (out / "samples.png").read_bytes() == before


def test_sample_output_flag_short_form(trained, tmp_path, capsys):
    recipe, out = trained
    target = tmp_path / "grid.png"
    assert cli.main(["sample", str(recipe), "--out", str(out), "--count", "1", "-o", str(target), "--quiet"]) == 0
    assert target.stat().st_size > 0


@pytest.mark.parametrize("reference", [False, True])
def test_the_bar_counts_each_slice_as_the_decoders_draw_it(reference):
    import torch

    from spnkit.core import build, plugins
    from spnkit.engine.sampling_bar import sampling_bar

    resolved = build.validate(RECIPE, plugins.load())
    pipeline = build.build_pipeline(resolved).eval()
    generator = torch.Generator().manual_seed(0)
    with sampling_bar(pipeline, 1) as bar:
        pipeline.sample(1, (1, 28, 28), generator=generator, reference=reference)
        ticked = bar.n  # before the bar closes (closing fills it up)
    assert ticked == 2 * 28 * 28  # every subpixel of both stages, ticked by the slices as they were drawn
    for stage in pipeline.stages.values():  # the decoders are as they were
        assert "sample" not in vars(stage.decoder) and "sample_reference" not in vars(stage.decoder)


@pytest.mark.parametrize("reference", [False, True])
def test_the_bar_counts_guided_slices_too(reference):
    import torch

    from spnkit.engine.sampling_bar import ENTRY_POINTS, sampling_bar
    from test_guidance import TWO_STAGES, randomized

    pipeline = randomized(TWO_STAGES)
    with sampling_bar(pipeline, 2) as bar:
        pipeline.sample(2, (2, 4, 4), side=torch.tensor([0, 2]), guidance=1.5, reference=reference,
                        generator=torch.Generator().manual_seed(0))
        ticked = bar.n
    assert ticked == 2 * (2 * 4 * 4)  # both stages' 2x4x4 subpixels, as guided slices were drawn
    for stage in pipeline.stages.values():
        assert not set(ENTRY_POINTS) & set(vars(stage.decoder))


def test_the_run_folder_holds_its_resolved_recipe_and_plugins(trained, capsys):
    from spnkit.core import build, plugins
    from spnkit.engine.checkpoint import stage_fingerprint

    recipe, out = trained
    registry = plugins.load()
    ran = build.load(str(recipe), ["train.steps=2", "sample.count=1"], registry)
    written = build.load(str(out / "recipe.toml"), [], registry)
    assert written.to_dict() == ran.to_dict()  # overrides applied, defaults filled in
    assert written.recipe.train.steps == 2 and written.recipe.optimizer.decay == 0.95
    for name in ran.recipe.stages:
        assert stage_fingerprint(written, name) == stage_fingerprint(ran, name)
    # the checkpoints accept it: it is the run's recipe
    capsys.readouterr()
    assert cli.main(["eval", str(out / "recipe.toml"), "--out", str(out), "--quiet", "--json"]) == 0

    listed = json.loads((out / "plugins.json").read_text())
    paths = {entry["path"]: entry for entry in listed}
    assert set(paths) == {"quantizer", *(f"stages.{s}.{k}" for s in ("low", "high")
                                         for k in ("ordering", "encoder", "decoder"))}
    assert paths["stages.low.decoder"]["name"] == "gated_pixelcnn"
    assert all(entry["distribution"] == "spnkit" and entry["version"] for entry in listed)


def test_summary_says_how_long_on_how_many_images_and_which_weights(trained):
    _, out = trained
    summary = json.loads((out / "summary.json").read_text())
    batch = RECIPE["train"]["batch_size"]
    assert summary["steps"] == 2 and summary["images_seen"] == {"low": 2 * batch, "high": 2 * batch}
    assert summary["seconds"] > 0
    assert summary["weights"]["kind"] == "polyak average" and summary["weights"]["updates"] == 2
    from spnkit.builtin.backends import CPUBackend
    from spnkit.core.backend import RuntimeConfig

    assert summary["precision"] == CPUBackend(RuntimeConfig()).precision  # "auto", resolved on this CPU


def test_eval_bits_map_draws_the_test_images_beside_their_bits(trained, capsys):
    from PIL import Image

    recipe, out = trained
    capsys.readouterr()
    assert cli.main(["eval", str(recipe), "--out", str(out), "--quiet", "--bits-map", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out / 'bits_map.png'}"
    with Image.open(out / "bits_map.png") as picture:
        assert picture.format == "PNG" and picture.height > picture.width  # three rows of image | map
    assert cli.main(["eval", str(recipe), "--out", str(out), "--bits-map", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --bits-map: must be in [1, 64]")


@pytest.mark.parametrize("name, message", [("folder", "is a folder; name the PNG file"),
                                           ("grid.txt", "expected a .png file name")])
def test_sample_refuses_an_output_that_is_no_png_file_before_drawing(trained, tmp_path, capsys, name, message):
    recipe, out = trained
    (tmp_path / "folder").mkdir()
    capsys.readouterr()
    assert cli.main(["sample", str(recipe), "--out", str(out), "--count", "1", "--quiet",
                     "-o", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output: ") and message in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
