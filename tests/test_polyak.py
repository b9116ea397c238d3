"""The Polyak average: its warm-up, and what evaluation gets from it early in training."""

import pytest
import torch
from torch import nn

from spnkit.core import build
from spnkit.data.sources import load_split
from spnkit.engine.polyak import PolyakAverage, warmed_up_decay
from spnkit.engine.train import StageTrainer
from test_engine import RECIPE


def test_average_follows_the_warmed_up_recurrence():
    model = nn.Linear(3, 2)
    average = PolyakAverage(model, decay=0.99)
    expected = [p.detach().clone() for p in model.parameters()]
    for n in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        average.update(model)
        d = min(0.99, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
    for got, want in zip(average.averaged.parameters(), expected):
        torch.testing.assert_close(got, want)
    assert average.updates == 30
    assert warmed_up_decay(0.9999, 0) == 0.1 and warmed_up_decay(0.9999, 10**6) == 0.9999
    assert warmed_up_decay(0.0, 5) == 0.0  # ema = 0: the average is the weights


def test_an_early_average_is_close_to_the_weights_not_to_their_initialisation(tmp_path):
    """20 steps at the paper's 0.9999: without warm-up the average keeps 99.8% of the random
    initial weights and evaluation scores an untrained model."""
    recipe = {**RECIPE, "train": {**RECIPE["train"], "steps": 20, "ema": 0.9999}}
    resolved = build.validate(recipe)
    trainer = StageTrainer(resolved, "low", load_split(resolved.recipe.data, "train").shards, tmp_path / "low")
    initial = [p.detach().clone() for p in trainer.stage.parameters()]
    trainer.train(progress=False)
    for average, now, start in zip(trainer.ema.averaged.parameters(), trainer.stage.parameters(), initial):
        if not torch.equal(now, start):
            assert (average - now).norm() < 0.5 * (start - now).norm()
    batch = next(trainer.batches)
    levels = resolved.recipe.data.to_levels(batch.images)
    target, cond = trainer.view.stage_inputs("low", trainer.view.quantizer.encode(levels))
    with torch.no_grad():
        raw = -trainer.stage.log_prob(target, cond).mean()
        averaged = -trainer.ema.averaged.log_prob(target, cond).mean()
    assert averaged == pytest.approx(raw.item(), rel=0.05), (averaged, raw)


def test_summary_names_the_weights_it_scored(tmp_path):
    import json

    import tomli_w

    from spnkit import cli

    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(RECIPE))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet", "train.steps=3"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["weights"] == {"kind": "polyak average", "decay": 0.9,
                                  "warm_up": "min(decay, (1 + n) / (10 + n)) at update n", "updates": 3}
