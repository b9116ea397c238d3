"""Checkpoint files: checksummed and verified before unpickling, never rotated over a good one
when damaged, cleared of killed saves' leftovers, never unpickled unsafely, and every failure a
fallback to the previous checkpoint or one error line."""

import errno
import hashlib
import io
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap

import pytest
import tomli_w
import torch

from spnkit import cli
from spnkit.engine import checkpoint
from spnkit.engine.checkpoint import CheckpointError
from test_engine import RECIPE


@pytest.fixture
def recipe_path(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(tomli_w.dumps(RECIPE))
    return path


def state(step: int) -> dict:
    """A small stage checkpoint."""
    generator = torch.Generator().manual_seed(step)
    return {"stage": "low", "fingerprint": "f", "model": {"w": torch.randn(256, generator=generator)},
            "ema": {"w": torch.randn(256, generator=generator)}, "optimizer": {}, "step": step}


def flip_bit(path, tensor: torch.Tensor) -> None:
    """Flip one bit of ``tensor``'s values in the file at ``path`` (a weight, not file structure)."""
    data = bytearray(path.read_bytes())
    at = data.find(tensor.numpy().tobytes())
    assert at >= 0
    data[at + 101] ^= 0x10
    path.write_bytes(bytes(data))


def framed(payload: bytes) -> bytes:
    """A checkpoint file around ``payload``, laid out as the module's docstring says."""
    return struct.pack("<8sIQ32s", b"SPNKITCK", 1, len(payload), hashlib.sha256(payload).digest()) + payload


def test_a_flipped_bit_is_detected_and_the_previous_checkpoint_used(tmp_path):
    first, second = state(1), state(2)
    checkpoint.save(first, tmp_path)
    checkpoint.save(second, tmp_path)
    flip_bit(tmp_path / "checkpoint.pt", second["model"]["w"])
    with pytest.warns(UserWarning, match=r"checkpoint \S+/checkpoint.pt is unreadable \(damaged: its SHA-256 "
                                         r"checksum does not match\); falling back to the previous one"):
        assert checkpoint.load(tmp_path)["step"] == 1
    flip_bit(tmp_path / "checkpoint.prev.pt", first["model"]["w"])
    with pytest.warns(UserWarning), pytest.raises(CheckpointError) as error:
        checkpoint.load(tmp_path)
    assert len(str(error.value).splitlines()) == 1
    assert re.search(r"checkpoint.pt is unreadable \(damaged.*checkpoint.prev.pt is unreadable \(damaged.*"
                     "no usable checkpoint is left", str(error.value))


def test_a_damaged_latest_checkpoint_is_never_rotated_over_the_good_previous_one(tmp_path):
    checkpoint.save(state(1), tmp_path)
    second = state(2)
    checkpoint.save(second, tmp_path)
    good = (tmp_path / "checkpoint.prev.pt").read_bytes()
    flip_bit(tmp_path / "checkpoint.pt", second["model"]["w"])
    checkpoint.save(state(3), tmp_path)
    assert (tmp_path / "checkpoint.prev.pt").read_bytes() == good  # the damaged step 2 was dropped
    assert checkpoint.load(tmp_path)["step"] == 3
    (tmp_path / "checkpoint.pt").unlink()
    assert checkpoint.load(tmp_path)["step"] == 1


def test_a_killed_saves_temporary_file_is_removed_and_a_live_ones_kept(tmp_path):
    """A save killed mid-write leaves its temporary file; the next load (or save) removes it,
    but not while the save that writes it is alive (it holds the file's lock)."""
    checkpoint.save(state(1), tmp_path)
    stale = tmp_path / ".checkpoint-killed.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert checkpoint.load(tmp_path)["step"] == 1
    assert not stale.exists()

    saver = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        import torch
        from spnkit.engine import checkpoint

        def stuck(handle, data):  # writes a little, then hangs as if the disk were slow
            written = real(handle, bytes(data[:100]))
            print("writing", flush=True)
            time.sleep(600)
            return written

        real, os.write = os.write, stuck
        checkpoint.save({{"step": 2, "w": torch.zeros(1000)}}, Path({str(tmp_path)!r}))
    """)
    process = subprocess.Popen([sys.executable, "-c", saver], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "writing\n"
        temporary = list(tmp_path.glob(".checkpoint-*.tmp"))
        assert len(temporary) == 1
        assert checkpoint.load(tmp_path)["step"] == 1
        assert temporary[0].exists()  # the live save's file is kept
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
    assert temporary[0].exists()
    assert checkpoint.load(tmp_path)["step"] == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint.pt"]

    stale.write_bytes(b"half a checkpoint")
    checkpoint.save(state(2), tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


def test_weights_that_do_not_fit_fall_back_or_are_one_error_line(recipe_path, tmp_path, capsys):
    """A checkpoint whose tensors do not fit the model (a hand-edited file, a recipe change the
    fingerprint missed) is unusable like a damaged one, for training and for evaluation."""
    from spnkit.core import build
    from spnkit.data.sources import load_split
    from spnkit.engine.train import StageTrainer

    resolved = build.validate(RECIPE)
    shards = load_split(resolved.recipe.data, "train").shards
    out = tmp_path / "run"
    folder = out / "stages" / "low"
    StageTrainer(resolved, "low", shards, folder).save()  # step 0, fits
    edited = checkpoint.load(folder)
    name = next(iter(edited["model"]))
    for key in ("model", "ema"):
        edited[key][name] = torch.zeros(3, 1, 7)
    edited["step"] = 9
    checkpoint.save(edited, folder)
    with pytest.warns(UserWarning, match=rf"checkpoint \S+/checkpoint.pt does not fit the model \({re.escape(name)} "
                                         r"has shape \[3, 1, 7\] in the file, \[.*\] in the model\); falling back"):
        assert StageTrainer(resolved, "low", shards, folder).step == 0

    checkpoint.save(edited, folder)  # now neither fits
    capsys.readouterr()
    with pytest.warns(UserWarning, match="does not fit"):
        assert cli.main(["train", str(recipe_path), "--stage", "low", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: checkpoint ")
    assert f"checkpoint.prev.pt does not fit the model ({name} has shape [3, 1, 7]" in err[0]
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no usable checkpoint is left"):
        checkpoint.load_trained(resolved, out)


class Trap:
    """Unpickled without ``weights_only``, it creates the file at ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_checkpoint_that_would_run_code_is_refused_without_advice_to_run_it(recipe_path, tmp_path, capsys):
    trap = tmp_path / "created-by-unpickling"
    buffer = io.BytesIO()
    torch.save({**state(1), "model": Trap(trap)}, buffer)
    payload = buffer.getvalue()
    torch.load(io.BytesIO(payload), weights_only=False).get("model").close()  # the trap is live...
    assert trap.exists()
    trap.unlink()
    folder = tmp_path / "run" / "stages" / "low"
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(framed(payload))  # its checksum valid: torch.load reads it
    (folder / "checkpoint.prev.pt").write_bytes(payload)  # a plain torch file: refused before torch.load

    with pytest.warns(UserWarning), pytest.raises(CheckpointError) as error:
        checkpoint.load(folder)
    with pytest.warns(UserWarning):
        assert cli.main(["train", str(recipe_path), "--stage", "low", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not trap.exists()
    assert len(err) == 1 and err[0] == f"error: {error.value}"
    for advice in ("weights_only", "trust", "safe_globals", "can still be loaded"):
        assert advice not in err[0]
    assert "checkpoint.pt is unreadable (it would call io.open when loaded" in err[0]


def test_a_checkpoint_without_the_header_is_refused_clearly(tmp_path):
    torch.save(state(1), tmp_path / "checkpoint.pt")  # an older spnkit's file, or any torch file
    with pytest.raises(CheckpointError, match=r"checkpoint.pt is unreadable \(no spnkit checkpoint header"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("failing", ["write", "fsync"])
def test_a_full_disk_leaves_the_checkpoints_intact_and_is_one_error_line(tmp_path, monkeypatch, failing):
    """The disk fills up mid-write (after the header and 1000 bytes), or at the flush."""
    checkpoint.save(state(1), tmp_path)
    checkpoint.save(state(2), tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    real, calls = getattr(os, failing), []

    def filling(handle, *data):
        calls.append(handle)
        if len(calls) > (2 if failing == "write" else 0):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(handle, bytes(data[0][:1000]))

    with monkeypatch.context() as patch:
        patch.setattr(os, failing, filling)
        with pytest.raises(CheckpointError) as error:
            checkpoint.save(state(3), tmp_path)
    assert str(error.value) == f"cannot write a checkpoint in {tmp_path}: No space left on device"
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before  # no temporary file left
    assert checkpoint.load(tmp_path)["step"] == 2


def test_truncated_checkpoint_falls_back_to_the_previous_one(recipe_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", str(recipe_path), "--stage", "low", "--out", str(out), "--quiet", "train.steps=10"]) == 0
    folder = out / "stages" / "low"
    latest = folder / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"checkpoint .*checkpoint.pt is unreadable \(damaged"):
        state = checkpoint.load(folder)
    assert state["step"] == 5
    with pytest.warns(UserWarning, match="unreadable"):
        assert cli.main(["train", str(recipe_path), "--stage", "low", "--out", str(out), "--quiet", "train.steps=10"]) == 0
    assert checkpoint.load(folder)["step"] == 10


def test_no_readable_checkpoint_is_one_error_line(recipe_path, tmp_path, capsys):
    folder = tmp_path / "run" / "stages" / "low"
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert cli.main(["train", str(recipe_path), "--stage", "low", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no usable checkpoint is left" in err[0] and "checkpoint.pt" in err[0]
