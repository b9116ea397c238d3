"""The xla backend on torch-xla's CPU runtime (run in the torch 2.9 + torch-xla venv with
``PJRT_DEVICE=CPU``; see .ci/run): same losses as the cpu backend, no recompilation after the
first steps, and checkpoints that move between xla and cpu."""

import json
import os

import pytest

torch_xla = pytest.importorskip("torch_xla", reason="needs torch-xla (the tpu extra: torch==2.9.0, torch-xla==2.9.0)")

import torch  # noqa: E402
import torch_xla.debug.metrics as met  # noqa: E402

from spnkit.core import build, plugins  # noqa: E402

from spnkit import cli
from spnkit.data.sources import load_split  # noqa: E402
from spnkit.engine.runtime import start_backend  # noqa: E402
from spnkit.engine.train import StageTrainer  # noqa: E402

os.environ.setdefault("PJRT_DEVICE", "CPU")
torch_xla.device()  # autograd must know the XLA device before the cpu runs' first backward pass
OVERRIDES = ["data.source='fashion_mnist_embedded'", "train.batch_size=8", "logging.every=1",
             "train.checkpoint_every=10", "train.steps=20", "schedule.learning_rate=[1e-3]", "schedule.milestones=[]",
             "stages.low.encoder={plugin='slice_embedder', conv_layers=1, channels=8, attention_layers=1, heads=2, "
             "attention_channels=8, residual_blocks=1, residual_channels=8}",
             "stages.low.decoder={plugin='hybrid', transformer={layers=1, heads=2, channels=8}, "
             "pixelcnn={layers=2, channels=8, residual_channels=8}}"]
RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "quickstart.toml")


def train(out, backend: str, steps: int) -> list[float]:
    args = ["train", RECIPE, "--stage", "low", "--out", str(out), "--quiet", "--backend", backend,
            *OVERRIDES, f"train.steps={steps}"]
    assert cli.main(args) == 0
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_xla_matches_cpu_and_checkpoints_move_both_ways(tmp_path):
    on_cpu = train(tmp_path / "cpu", "cpu", 20)
    on_xla = train(tmp_path / "xla", "xla", 20)
    assert len(on_xla) == 20
    assert max(abs(a - b) for a, b in zip(on_cpu, on_xla)) < 2e-3, (on_cpu, on_xla)
    assert on_xla[-1] < on_xla[0]
    for first, then in [("xla", "cpu"), ("cpu", "xla")]:
        out = tmp_path / f"{first}-then-{then}"
        train(out, first, 10)
        resumed = train(out, then, 20)
        assert max(abs(a - b) for a, b in zip(on_cpu[10:], resumed[10:])) < 2e-3, (first, then)


def test_no_recompilation_after_warm_up(tmp_path):
    resolved = build.load(RECIPE, OVERRIDES)
    backend = start_backend(resolved.recipe.runtime, plugins.load(autoload=False), "xla")
    shards = load_split(resolved.recipe.data, "train").shards
    trainer = StageTrainer(resolved, "low", shards, tmp_path / "low", backend)
    for _ in range(3):
        trainer.train_step()[0].cpu()
    compiled = met.metric_data("CompileTime")[0]
    for _ in range(17):
        loss, _ = trainer.train_step()
    assert torch.isfinite(loss.cpu())
    assert met.metric_data("CompileTime")[0] == compiled, met.short_metrics_report()


def test_a_resumed_run_draws_on_the_device_what_an_uninterrupted_one_draws(tmp_path):
    """Labels dropped for classifier-free training are drawn by the XLA device's generator: it is
    seeded by the recipe and kept in checkpoints, so a stopped and resumed run ends bitwise where
    an uninterrupted one ends (a process that drew something else in between included)."""
    labels = "{plugin='class_embedding', classes=10, channels=4, drop_labels=0.5}"
    extra = [f"stages.low.conditioner={labels}", f"stages.high.conditioner={labels}", "train.checkpoint_every=2"]

    def train_to(out, steps: int) -> None:
        assert cli.main(["train", RECIPE, "--stage", "low", "--out", str(out), "--quiet", "--backend", "xla",
                         *OVERRIDES, *extra, f"train.steps={steps}"]) == 0

    train_to(tmp_path / "straight", 4)
    train_to(tmp_path / "stopped", 2)
    torch.rand(5, device=torch_xla.device())  # the device's generator moves on between the two
    train_to(tmp_path / "stopped", 4)
    from spnkit.engine import checkpoint

    straight, resumed = (checkpoint.load(tmp_path / name / "stages" / "low") for name in ("straight", "stopped"))
    assert straight["step"] == resumed["step"] == 4
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    assert torch.equal(straight["rng"]["xla"], resumed["rng"]["xla"])
