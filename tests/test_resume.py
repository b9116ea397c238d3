"""Exact resume: a run stopped anywhere (between steps, or by SIGKILL at any instant, inside a
checkpoint write included) and resumed ends bitwise where an uninterrupted run ends."""

import copy
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import tomli_w
import torch

from spnkit.core import build
from spnkit.data.sources import load_split
from spnkit.engine import checkpoint
from spnkit.engine.train import StageTrainer

LABELS = {"plugin": "class_embedding", "classes": 10, "channels": 4, "drop_labels": 0.25}
ENCODER = {"plugin": "slice_embedder", "conv_layers": 1, "channels": 4, "attention_layers": 1, "heads": 2,
           "attention_channels": 4, "residual_blocks": 1, "residual_channels": 4}
# every kind of stage: a downsampled first slice (raster pixelcnn), size upscaling from given
# slices (hybrid), depth upscaling (masked transformer); all class-conditional, dropping labels
RECIPE = {
    "seed": 5,
    "data": {"source": "fashion_mnist_embedded"},
    "quantizer": {"plugin": "depth_split", "splits": [3, 5]},
    "stages": {
        "small": {"plane": 0, "downsample": 2, "decoder": {"plugin": "pixelcnn", "layers": 1, "channels": 4,
                                                            "head_channels": 4}, "conditioner": LABELS},
        "up": {"plane": 0, "given_slices": 1, "conditions_on": ["small"],
               "ordering": {"plugin": "subscale", "factor": 2}, "encoder": ENCODER, "conditioner": LABELS,
               "decoder": {"plugin": "hybrid", "transformer": {"layers": 1, "heads": 2, "channels": 4},
                           "pixelcnn": {"layers": 1, "channels": 4, "residual_channels": 4}}},
        "high": {"plane": 1, "conditions_on": ["small", "up"], "ordering": {"plugin": "subscale", "factor": 2},
                 "encoder": ENCODER, "conditioner": LABELS,
                 "decoder": {"plugin": "masked_transformer", "layers": 1, "heads": 2, "channels": 4}},
    },
    "train": {"steps": 6, "batch_size": 4, "ema": 0.9, "checkpoint_every": 2},
}

# the same stages as PixelCNN Auto-Encoders: each conditioned on the code of its own input
CODE = {"plugin": "image_encoder", "bottleneck": 3, "channels": 4, "layers": 2}
AUTOENCODER = copy.deepcopy(RECIPE)
for table in AUTOENCODER["stages"].values():
    table["conditioner"] = CODE


def assert_same_training_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["ema_updates"] == b["ema_updates"]
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    for index, (x, y) in enumerate(zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values())):
        for name in x:
            assert torch.equal(x[name], y[name]), f"optimizer state {index}.{name} differs after resume"
    assert a["data"] == b["data"]  # every stream's cursor: the same samples and target slices follow
    assert all(torch.equal(a["rng"][k], b["rng"][k]) for k in a["rng"])


@pytest.mark.parametrize("raw, stage", [(RECIPE, name) for name in RECIPE["stages"]]
                         + [(AUTOENCODER, "small"), (AUTOENCODER, "high")], ids=lambda value: value
                         if isinstance(value, str) else "autoencoder" if value is AUTOENCODER else "labels")
def test_stopping_and_resuming_any_kind_of_stage_is_bitwise_exact(raw, stage, tmp_path):
    resolved = build.validate(raw)
    shards = load_split(resolved.recipe.data, "train").shards
    StageTrainer(resolved, stage, shards, tmp_path / "straight").train(progress=False)
    StageTrainer(resolved, stage, shards, tmp_path / "stopped").train(progress=False, until=3)
    torch.rand(7)  # the global random state moves on between the two processes' work
    StageTrainer(resolved, stage, shards, tmp_path / "stopped").train(progress=False)
    assert_same_training_state(checkpoint.load(tmp_path / "straight"), checkpoint.load(tmp_path / "stopped"))


def spnkit(*args) -> subprocess.Popen:
    env = {**os.environ, "SPNKIT_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "spnkit.cli", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def checkpointed_step(folder) -> int:
    """The step of the last whole checkpoint in ``folder`` (0 before the first, -1 when caught
    between the writes of its files)."""
    if not (folder / "checkpoint.pt").exists():
        return 0
    try:
        return checkpoint.load(folder)["step"]
    except Exception:  # caught between its writes
        return -1


def wait_for(run: subprocess.Popen, folder, inside_a_write: bool) -> float | None:
    """Wait until ``run`` is writing a checkpoint (a temporary file exists), or has written two
    more; the seconds between those two (0 for a write), or None if it exits first."""
    last, seen_at = checkpointed_step(folder), None
    while run.poll() is None:
        if inside_a_write and any(folder.glob("*.tmp")):
            return 0.0
        step = checkpointed_step(folder) if not inside_a_write else -1
        if step > last:
            if seen_at is not None:
                return time.monotonic() - seen_at
            last, seen_at = step, time.monotonic()
        time.sleep(0.001)
    return None


def test_sigkill_at_random_instants_then_resume_is_bitwise_exact(tmp_path):
    """Killed again and again at random instants (a checkpoint is written after every step, so
    many kills land inside a write), the run still ends where an uninterrupted one ends."""
    recipe = copy.deepcopy(RECIPE)
    recipe["train"].update({"steps": 40, "checkpoint_every": 1})
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(recipe))
    train = ["train", path, "--stage", "up", "--quiet", "--out"]
    straight = spnkit(*train, tmp_path / "straight")
    assert straight.wait(timeout=600) == 0, straight.stderr.read()

    chance, folder, kills = random.Random(0), tmp_path / "killed" / "stages" / "up", []
    while len(kills) < 6:
        run = spnkit(*train, tmp_path / "killed")
        inside_a_write = len(kills) % 2 == 0
        step_seconds = wait_for(run, folder, inside_a_write)
        if step_seconds is None:
            break  # it finished first
        time.sleep(chance.uniform(0.0, step_seconds))  # anywhere in the next step, however fast
        run.send_signal(signal.SIGKILL)
        run.wait()
        state = checkpoint.load(folder)
        kills.append((inside_a_write, 0 if state is None else state["step"]))
    finish = spnkit(*train, tmp_path / "killed")
    assert finish.wait(timeout=600) == 0, finish.stderr.read()
    assert len(kills) == 6 and all(step < 40 for _, step in kills) and kills[-1][1] > 0, kills
    assert_same_training_state(checkpoint.load(tmp_path / "straight" / "stages" / "up"), checkpoint.load(folder))
