"""Training engine: exact resume after SIGKILL, damaged checkpoints, the CLI's main job."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w
import torch

from spnkit import cli
from spnkit.engine import checkpoint

ENCODER = {"plugin": "slice_embedder", "conv_layers": 1, "channels": 4, "attention_layers": 0,
           "residual_blocks": 1, "residual_channels": 4}
DECODER = {"plugin": "gated_pixelcnn", "layers": 1, "channels": 4, "residual_channels": 4}
RECIPE = {
    "name": "tiny",
    "seed": 3,
    "data": {"source": "fashion_mnist_embedded", "height": 28, "width": 28, "channels": 1, "bits": 8},
    "quantizer": {"plugin": "depth_split", "splits": [3, 5]},
    "stages": {
        "low": {"plane": 0, "ordering": {"plugin": "subscale", "factor": 2}, "encoder": ENCODER, "decoder": DECODER},
        "high": {"plane": 1, "conditions_on": ["low"], "ordering": {"plugin": "subscale", "factor": 2},
                 "encoder": ENCODER, "decoder": DECODER},
    },
    "train": {"steps": 40, "batch_size": 8, "ema": 0.9, "checkpoint_every": 5},
    "schedule": {"learning_rate": [1e-3, 5e-4], "milestones": [20]},
    "logging": {"every": 5},
    "eval": {"batch_size": 50, "max_images": 100},
    "sample": {"count": 4},
}


@pytest.fixture
def recipe_path(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(tomli_w.dumps(RECIPE))
    return path


def spnkit(*args) -> subprocess.Popen:
    env = {**os.environ, "SPNKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.Popen([sys.executable, "-m", "spnkit.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def states(folder: Path) -> dict:
    return checkpoint.load(folder)


def test_resume_after_sigkill_is_bitwise_identical(recipe_path, tmp_path):
    steps = "train.steps=120"
    whole = spnkit("train", recipe_path, steps, "--stage", "low", "--out", tmp_path / "whole", "--quiet")
    assert whole.wait(timeout=600) == 0, whole.stderr.read()

    killed = spnkit("train", recipe_path, steps, "--stage", "low", "--out", tmp_path / "killed", "--quiet")
    folder = tmp_path / "killed" / "stages" / "low"
    deadline = time.time() + 300
    while time.time() < deadline:
        state = checkpoint.load(folder) if (folder / "checkpoint.pt").exists() else None
        if state is not None and state["step"] >= 40:
            break
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    interrupted_at = checkpoint.load(folder)["step"]
    assert 40 <= interrupted_at < 120, "the run must be killed mid-training"

    resumed = spnkit("train", recipe_path, steps, "--stage", "low", "--out", tmp_path / "killed", "--quiet")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    a, b = states(tmp_path / "whole" / "stages" / "low"), states(folder)
    assert a["step"] == b["step"] == 120
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    assert a["data"] == b["data"]  # every stream's cursor: the same samples and target slices follow


def test_run_writes_summary_samples_curves_and_metrics(recipe_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", str(recipe_path), "--out", str(out), "--quiet", "train.steps=6"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"low", "high"}
    assert summary["test_bits_per_dim"] == pytest.approx(sum(summary["stages"].values()))
    assert summary["images"] == 100 and "embedded" in summary["test_data"]
    assert f"{summary['test_bits_per_dim']:.4f}" in printed
    for name in ("samples.png", "curves.png", "metrics.jsonl"):
        assert (out / name).stat().st_size > 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in records if "stage" in r} == {"low", "high"}
    assert [r["kind"] for r in records if "stage" not in r] == ["evaluation"]

    assert cli.main(["eval", str(recipe_path), "--out", str(out), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_bits_per_dim"] == pytest.approx(summary["test_bits_per_dim"])

    from spnkit.data.sources import EMBEDDED
    from spnkit.data.idx import read_idx
    from PIL import Image

    source = tmp_path / "garment.png"
    Image.fromarray(read_idx(EMBEDDED / "t10k-images-idx3-ubyte.gz")[0]).save(source)
    target = tmp_path / "completed.png"
    assert cli.main(["sample", str(recipe_path), "--out", str(out), "--count", "2", "--complete", str(source),
                     "--output", str(target)]) == 0
    assert target.exists()


def test_recipe_change_is_refused_on_resume(recipe_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", str(recipe_path), "--stage", "low", "--out", str(out), "--quiet", "train.steps=2"]) == 0
    assert cli.main(["train", str(recipe_path), "--stage", "low", "--out", str(out), "--quiet",
                     "stages.low.decoder.layers=2"]) == 2
    assert "different recipe" in capsys.readouterr().err


def test_paper_recipe_without_its_data_is_one_error_line(capsys):
    recipe = Path(__file__).parents[1] / "recipes" / "celebahq256.toml"
    assert cli.main(["run", str(recipe), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: data.train: 27 of 27 shards not found: data/celebahq256/train-000000.tar")
    assert "make them with `spnkit shard CELEBA_HQ_FOLDER data/celebahq256 --size 256 --split train=27000,test=rest`" in err[0]


def test_engine_settings_out_of_range_are_all_reported(recipe_path, capsys):
    assert cli.main(["train", str(recipe_path), "--quiet", "train.steps=-1", "train.ema=1.5",
                     "eval.batch_size=0", "stages.low.temperature=0.0"]) == 2
    err = capsys.readouterr().err
    for path in ("train.steps", "train.ema", "eval.batch_size", "stages.low.temperature"):
        assert f"error: {path}: must be" in err
    assert "Traceback" not in err


def test_resumed_metrics_drop_records_past_the_checkpoint(tmp_path):
    from spnkit.engine.metrics import trim_metrics

    path = tmp_path / "metrics.jsonl"
    records = [{"stage": "low", "step": s} for s in (5, 10, 15)] + [{"stage": "high", "step": 20}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"stage": "low", "st')
    trim_metrics(path, "low", 10)
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept == [records[0], records[1], records[3]]


def test_clipping_sees_the_gradients_the_backend_reduced(tmp_path):
    """``Backend.reduce_gradients`` runs before clipping, so the norm that clipping reads is the
    reduced one (on XLA replicas it is the global batch's, as under DDP)."""
    from spnkit.builtin.backends import CPUBackend
    from spnkit.core import build
    from spnkit.data.sources import load_split
    from spnkit.engine.train import StageTrainer

    class SummingThreeReplicas(CPUBackend):
        """Reduces as if two more replicas had computed the same gradients."""

        def reduce_gradients(self, optimizer):
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    parameter.grad.mul_(3)

    resolved = build.validate({**RECIPE, "optimizer": {"grad_clip": 0.1}})
    shards = load_split(resolved.recipe.data, "train").shards
    norms = []
    for folder, backend in (("one", CPUBackend), ("three", SummingThreeReplicas)):
        trainer = StageTrainer(resolved, "low", shards, tmp_path / folder, backend(resolved.recipe.runtime))
        norms.append(trainer.train_step()[1].item())
    assert norms[1] == pytest.approx(3 * norms[0], rel=1e-5)
    assert norms[0] > resolved.recipe.optimizer.grad_clip  # the clipped step, not an idle one


def test_resuming_in_another_precision_than_the_checkpoint_s_warns(tmp_path):
    """``auto`` resolves per machine: a stage trained in bf16 on one and resumed on another that
    has no native bf16 goes on in fp32; it says so once, naming both."""
    import warnings

    from spnkit.builtin.backends import CPUBackend
    from spnkit.core import build
    from spnkit.data.sources import load_split
    from spnkit.engine.train import StageTrainer

    class Native(CPUBackend):
        def native_bf16(self):
            return True

    class NoNative(CPUBackend):
        def native_bf16(self):
            return False

    resolved = build.validate(RECIPE)
    shards = load_split(resolved.recipe.data, "train").shards
    trainer = StageTrainer(resolved, "low", shards, tmp_path, Native(resolved.recipe.runtime))
    trainer.train(progress=False, until=2)
    with warnings.catch_warnings(record=True) as same:
        warnings.simplefilter("always")
        StageTrainer(resolved, "low", shards, tmp_path, Native(resolved.recipe.runtime))
    assert not [w for w in same if "precision" in str(w.message)]
    with pytest.warns(UserWarning, match=r"stage 'low' was trained in bf16 up to step 2 and goes on in fp32 "
                                         r"\(runtime.precision = 'auto' here\)"):
        StageTrainer(resolved, "low", shards, tmp_path, NoNative(resolved.recipe.runtime))


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_trains_in_bf16_only_where_the_device_multiplies_it_natively(tmp_path, native):
    """``runtime.precision = "auto"`` resolves per backend; the training step then runs its
    matrix products in what it resolved to, and "fp32"/"bf16" override the device's answer."""
    from spnkit.builtin.backends import CPUBackend
    from spnkit.core import build
    from spnkit.core.backend import RuntimeConfig
    from spnkit.data.sources import load_split
    from spnkit.engine.train import StageTrainer

    class Device(CPUBackend):
        def native_bf16(self):
            return native

    assert Device(RuntimeConfig()).precision == ("bf16" if native else "fp32")
    assert Device(RuntimeConfig(precision="fp32")).precision == "fp32"
    assert Device(RuntimeConfig(precision="bf16")).precision == "bf16"

    resolved = build.validate(RECIPE)
    assert resolved.recipe.runtime.precision == "auto"
    trainer = StageTrainer(resolved, "low", load_split(resolved.recipe.data, "train").shards, tmp_path,
                           Device(resolved.recipe.runtime))
    dtypes = set()
    hooks = [m.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
             for m in trainer.stage.modules() if isinstance(m, torch.nn.Conv2d)]
    trainer.train_step()
    for hook in hooks:
        hook.remove()
    assert dtypes == {torch.bfloat16 if native else torch.float32}
    assert all(p.dtype == torch.float32 for p in trainer.stage.parameters())
