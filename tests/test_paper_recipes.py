"""The paper's recipes: valid, sized as Table 4 says, and trainable (at reduced width)."""

from pathlib import Path

import pytest
import torch

from spnkit.core import build

RECIPES = Path(__file__).parents[1] / "recipes"
# paper parameter counts per stage (Menick & Kalchbrenner 2018): CelebA-HQ ~50M,
# ImageNet 32/64 ~150M, ImageNet 128/256 ~250M
PAPER = {
    "celebahq256": 50e6,
    "celebahq256_5bit": 50e6,
    "imagenet32": 150e6,
    "imagenet64": 150e6,
    "imagenet128": 250e6,
    "imagenet256": 250e6,
}


@pytest.mark.parametrize("name", PAPER)
def test_every_stage_is_within_20_percent_of_the_paper(name):
    resolved = build.load(str(RECIPES / f"{name}.toml"))
    for stage in resolved.recipe.stages:
        with torch.device("meta"):
            count = sum(p.numel() for p in build.build_stage(resolved, stage).parameters())
        assert abs(count - PAPER[name]) <= 0.2 * PAPER[name], f"{name}.{stage}: {count:,} parameters"


def reduced_width(resolved: build.Resolved) -> list[str]:
    """Overrides that replace every encoder and decoder table with a tiny one."""
    overrides = []
    for stage in resolved.recipe.stages:
        if resolved.stages[stage].encoder is not None:
            overrides.append(f"stages.{stage}.encoder={{plugin='slice_embedder', conv_layers=1, channels=6, "
                             "attention_layers=1, heads=1, attention_channels=6, residual_blocks=1, residual_channels=6}")
        overrides.append(f"stages.{stage}.decoder={{plugin='hybrid', transformer={{layers=1, heads=1, channels=6}}, "
                         "pixelcnn={layers=1, channels=6, residual_channels=6}}")
    return overrides


def smooth_images(batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    base = (rows * 7 + cols * 3).view(1, 1, height, width) + 40 * torch.arange(channels).view(1, channels, 1, 1)
    return (base + 11 * torch.arange(batch).view(batch, 1, 1, 1)) % 256


@pytest.mark.parametrize("name", PAPER)
def test_training_steps_lower_the_loss_at_reduced_width(name):
    path = str(RECIPES / f"{name}.toml")
    resolved = build.load(path, reduced_width(build.load(path)))
    torch.manual_seed(0)
    pipeline = build.build_pipeline(resolved)
    data = resolved.recipe.data
    planes = pipeline.quantizer.encode(smooth_images(2, data.channels, data.height, data.width))
    for stage_name, stage in pipeline.stages.items():
        target, cond = pipeline.stage_inputs(stage_name, planes)
        optimizer = torch.optim.Adam(stage.parameters(), lr=3e-3)
        losses = []
        for _ in range(8):
            loss = stage.loss(target, cond, generator=torch.Generator().manual_seed(0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], f"{name}.{stage_name}: {losses}"
