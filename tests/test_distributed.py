"""Data parallel training: two gloo processes under torchrun follow the loss curve of one
process with the same global batch; gradient accumulation does too; pixels_per_batch sizes it."""

import copy
import json
import os
import shutil
import subprocess
import sys

import pytest
import tomli_w

from spnkit.core import build

from spnkit import cli
from test_engine import RECIPE

STEPS = 8


CLIP = 0.05  # below the gradient norms of these steps, so clipping is active in every one


def recipe_file(tmp_path, runtime: dict | None = None, **train) -> str:
    recipe = copy.deepcopy(RECIPE)
    recipe["data"]["streams"] = 2
    recipe["train"].update({"steps": STEPS, "checkpoint_every": 4, **train})
    recipe["logging"] = {"every": 1}
    recipe["optimizer"] = {"grad_clip": CLIP}
    # fp32 unless asked: several processes' sums are compared with one process's, and bf16
    # autocast (the default on CPUs with AMX) rounds each half batch apart
    recipe["runtime"] = {"precision": "fp32", **(runtime or {})}
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(recipe))
    return str(path)


def records(out) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["stage"] == "low"]


def losses(out) -> list[float]:
    return [r["loss"] for r in records(out)]


def torchrun(*args) -> subprocess.CompletedProcess:
    script = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "SPNKIT_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([script, "--standalone", "--nproc-per-node", "2", "-m", "spnkit.cli", *args],
                          env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process_and_resume(tmp_path, parallel):
    """With clipping active, so it must see the gradients of the whole global batch."""
    recipe = recipe_file(tmp_path, runtime={"parallel": parallel})
    single = tmp_path / "single"
    assert cli.main(["train", recipe, "--stage", "low", "--out", str(single), "--quiet", "--backend", "cpu"]) == 0
    out = tmp_path / parallel
    for steps in (STEPS // 2, STEPS):  # stop half-way, then resume from the checkpoint
        done = torchrun("train", recipe, "--stage", "low", "--out", str(out), "--quiet", "--backend", "cpu",
                        f"train.steps={steps}")
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = losses(single), losses(out)
    assert len(one) == len(two) == STEPS
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-5, (one, two)
    norms_one, norms_two = [r["grad_norm"] for r in records(single)], [r["grad_norm"] for r in records(out)]
    assert min(norms_one) > CLIP, norms_one  # clipping was active
    assert max(abs(a - b) / a for a, b in zip(norms_one, norms_two)) < 1e-4, (norms_one, norms_two)
    assert one[-1] < one[0]
    import torch

    from spnkit.engine import checkpoint

    a = checkpoint.load(single / "stages" / "low")
    b = checkpoint.load(out / "stages" / "low")
    assert a["data"]["cursors"] == b["data"]["cursors"]  # both ranks' streams, merged
    assert set(b["data"]["cursors"]) == {"0", "1"}
    for name, value in a["ema"].items():
        assert torch.allclose(value.float(), b["ema"][name].float(), atol=1e-5), name


def test_gradient_accumulation_matches_the_whole_batch(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert cli.main(["train", recipe_file(tmp_path), "--stage", "low", "--out", str(whole), "--quiet"]) == 0
    assert cli.main(["train", recipe_file(tmp_path, accumulate=2), "--stage", "low", "--out", str(split),
                     "--quiet"]) == 0
    assert max(abs(a - b) for a, b in zip(losses(whole), losses(split))) < 1e-5


def test_pixels_per_batch_keeps_pixels_constant(tmp_path, capsys):
    resolved = build.load(recipe_file(tmp_path), ["train.pixels_per_batch=6272"])
    assert resolved.batch_size == 8  # 6272 / (28 * 28)
    assert cli.main(["check", recipe_file(tmp_path), "train.pixels_per_batch=1000", "train.accumulate=3"]) == 2
    err = capsys.readouterr().err
    assert "train.pixels_per_batch: 1000 is not a multiple of the 28x28 = 784 pixels" in err
    assert "train.accumulate: 3 micro-batches do not divide the batch of 1" in err


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_backend_trains_in_bf16_and_resumes_on_cpu(tmp_path):
    out = tmp_path / "cuda"
    recipe = recipe_file(tmp_path, runtime={"precision": "bf16"})
    assert cli.main(["train", recipe, "--stage", "low", "--out", str(out), "--quiet", "--backend", "cuda"]) == 0
    assert losses(out)[-1] < losses(out)[0]
    assert cli.main(["train", recipe, "--stage", "low", "--out", str(out), "--quiet", "--backend", "cpu",
                     f"train.steps={STEPS + 2}"]) == 0
    assert len(losses(out)) == STEPS + 2


def test_a_busy_folder_stops_every_process_with_one_error_line(tmp_path):
    """The main process finds the folder in use; the other must not wait in a collective for it
    and die there with a traceback."""
    from spnkit.engine.out_folder import claim

    recipe = recipe_file(tmp_path)
    out = tmp_path / "busy"
    out.mkdir()
    with claim(out, "train"):  # another spnkit process holds it
        done = torchrun("train", recipe, "--stage", "low", "--out", str(out), "--quiet", "--backend", "cpu")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "is in use by another spnkit process" in errors[0], done.stderr[-3000:]
    assert "[rank1]" not in done.stderr, done.stderr[-3000:]  # no traceback from the other process
    assert "exitcode  : 2" in done.stderr  # both processes ended as a user mistake does
    assert "exitcode  : 1" not in done.stderr
    assert not (out / "stages").exists()
