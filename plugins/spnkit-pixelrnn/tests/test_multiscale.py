"""The Multi-Scale PixelRNN recipe (recipes/multiscale.toml): two PixelRNN stages as size
upscaling, exactly normalized as a system on a tiny shape, and trained end to end."""

import itertools
import json
from pathlib import Path

import torch

from spnkit import cli
from spnkit.core import build

RECIPE = str(Path(__file__).parents[1] / "recipes" / "multiscale.toml")
TINY_ENCODER = ("{plugin='slice_embedder', conv_layers=1, channels=6, attention_layers=1, heads=1, "
                "attention_channels=6, residual_blocks=1, residual_channels=6}")
TINY = [f"stages.full.encoder={TINY_ENCODER}",
        "stages.small.decoder={plugin='diagonal_bilstm', layers=1, features=6}",
        "stages.full.decoder={plugin='diagonal_bilstm', layers=1, features=6}"]


def test_the_recipe_is_a_small_pixelrnn_then_a_conditional_one():
    resolved = build.load(RECIPE)
    small, full = resolved.recipe.stages["small"], resolved.recipe.stages["full"]
    assert (small.plane, small.downsample, small.given_slices) == (0, 2, 0)
    assert (full.plane, full.downsample, full.given_slices, full.conditions_on) == (0, 1, 1, ["small"])
    assert {plan.decoder.entry.name for plan in resolved.stages.values()} == {"diagonal_bilstm"}
    assert resolved.stages["full"].ordering.options.factor == 2


def test_the_two_stage_system_is_normalized_on_a_tiny_shape():
    """Every 4x2 one-bit image (256 of them): the system's probabilities sum to 1, and the full
    stage's depend on the small image it is given."""
    resolved = build.load(RECIPE, ["data.height=4", "data.width=2", "data.bits=1", "quantizer.splits=[1]", *TINY])
    torch.manual_seed(0)
    pipeline = build.build_pipeline(resolved).eval()
    images = torch.tensor(list(itertools.product([0, 1], repeat=8))).view(256, 1, 4, 2)
    with torch.no_grad():
        nats = pipeline.log_prob(images)
    total = torch.logsumexp((nats["small"] + nats["full"]).double(), dim=0)
    assert abs(total.item()) < 1e-5
    # the small image (pixels [::2, ::2]) changes what the full stage gives the rest
    rest = images.clone()
    rest[:, :, ::2, ::2] = 1 - rest[:, :, ::2, ::2]
    with torch.no_grad():
        assert not torch.allclose(pipeline.log_prob(rest)["full"], nats["full"])


def test_the_recipe_trains_evaluates_and_samples_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["--strict-plugins", "run", RECIPE, *TINY, "data.source=fashion_mnist_embedded", "train.steps=6",
                     "train.checkpoint_every=3", "eval.max_images=20", "sample.count=2", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"].keys() == {"small", "full"}
    assert summary["test_bits_per_dim"] == sum(summary["stages"].values()) < 8
    assert (out / "samples.png").exists()
