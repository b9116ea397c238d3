"""Metric sinks: JSONL always, TensorBoard and Weights & Biases (offline) when asked for, each
with the training records, the evaluation, the hyperparameters and the samples; a sink asked
for and not installed is one error line naming its package."""

import glob
import importlib.util
import json
import struct

import pytest
import tomli_w

from spnkit import cli
from spnkit.core import build, plugins
from spnkit.core.recipe import RecipeError
from spnkit.engine import metrics
from test_engine import RECIPE

TRAINING = ("loss", "bits_per_dim", "lr", "grad_norm", "images_per_second")


@pytest.fixture(scope="module")
def run_with_every_sink(tmp_path_factory):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    folder = tmp_path_factory.mktemp("sinks")
    recipe = folder / "tiny.toml"
    recipe.write_text(tomli_w.dumps(RECIPE))
    out = folder / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        patch.delenv("WANDB_PROJECT", raising=False)
        assert cli.main(["run", str(recipe), "--out", str(out), "--quiet", "train.steps=4", "logging.every=2",
                         "sample.count=2", 'logging.sinks=["jsonl", "tensorboard", "wandb"]']) == 0
        __import__("wandb").teardown()  # its per-process settings (offline) go with the environment
    return out


def test_jsonl_holds_training_records_and_the_evaluation(run_with_every_sink):
    records = [json.loads(line) for line in (run_with_every_sink / "metrics.jsonl").read_text().splitlines()]
    training = [r for r in records if "stage" in r]
    assert [(r["stage"], r["step"]) for r in training] == [("low", 2), ("low", 4), ("high", 2), ("high", 4)]
    assert all(set(TRAINING) <= set(r) for r in training)
    [evaluation] = [r for r in records if r.get("kind") == "evaluation"]
    summary = json.loads((run_with_every_sink / "summary.json").read_text())
    assert evaluation["step"] == 4 and evaluation["test_bits_per_dim"] == summary["test_bits_per_dim"]
    assert evaluation["stages"] == summary["stages"]


def test_tensorboard_has_every_training_figure_the_evaluation_hparams_and_samples(run_with_every_sink):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_with_every_sink / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {f"{stage}/{name}" for stage in ("low", "high") for name in TRAINING} <= scalars
    assert {"eval/test_bits_per_dim", "eval/low", "eval/high", "hparam/test_bits_per_dim"} <= scalars
    assert [e.step for e in events.Scalars("low/loss")] == [2, 4]
    summary = json.loads((run_with_every_sink / "summary.json").read_text())
    assert events.Scalars("eval/test_bits_per_dim")[0].value == pytest.approx(summary["test_bits_per_dim"])
    [grid] = events.Images("samples")
    assert grid.step == 4 and grid.width > 28 and grid.height > 28
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["train.steps"].number_value == 4 and hparams["stages.low.decoder.plugin"].string_value == \
        "gated_pixelcnn"


def wandb_records(path):
    """The protobuf records of an offline W&B run file (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, block, pending, found = 7, 32768, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position:position + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the padding at a block's end
            position += left
            continue
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
    return found


def test_wandb_writes_an_offline_run_with_config_history_and_summary(run_with_every_sink):
    from pathlib import Path

    [path] = map(Path, glob.glob(str(run_with_every_sink / "wandb" / "offline-run-*" / "run-*.wandb")))
    records = wandb_records(path)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_id == (run_with_every_sink / "wandb-id").read_text().strip() and run.project == "spnkit"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["train"]["steps"] == 4 and config["logging"]["every"] == 2
    history = [{item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    keys = set().union(*history)
    assert {f"{stage}/{name}" for stage in ("low", "high") for name in (*TRAINING, "step")} <= keys
    assert {"eval/test_bits_per_dim", "eval/low", "eval/high"} <= keys
    assert any(key.startswith("samples") for key in keys)
    assert [json.loads(h["low/step"]) for h in history if "low/step" in h] == [2, 4]


def test_a_sink_asked_for_and_not_installed_is_one_error_line(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(RECIPE))
    assert cli.main(["train", str(recipe), "--out", str(tmp_path / "out"), "--quiet",
                     'logging.sinks=["jsonl", "wandb"]']) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: logging.sinks: 'wandb' needs the wandb package: pip install wandb "
                                "(or pip install 'spnkit[wandb]')"]
    assert not (tmp_path / "out" / "stages").exists()  # nothing trained


def test_the_default_tensorboard_missing_is_one_warning_and_jsonl_goes_on(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    resolved = build.validate(RECIPE, plugins.load())
    assert resolved.recipe.logging.sinks == metrics.DEFAULT
    with pytest.warns(UserWarning, match="tensorboard is not installed") as caught:
        sinks = metrics.open_sinks(tmp_path, resolved)
    assert len(caught) == 1 and [type(s) for s in sinks] == [metrics.JsonlSink]


def test_unknown_sinks_are_recipe_errors():
    raw = {**RECIPE, "logging": {"sinks": ["jsonl", "mlflow"]}}
    with pytest.raises(RecipeError) as raised:
        build.validate(raw, plugins.load())
    [line] = raised.value.lines
    assert line.startswith("logging.sinks") and "mlflow" in line and '"wandb"' in line


def test_wandb_without_a_login_is_one_error_line(tmp_path, monkeypatch, capsys):
    wandb = pytest.importorskip("wandb")
    wandb.teardown()  # W&B keeps its settings per process: read them again, from this environment
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc: not logged in
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / "wandb"))
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(RECIPE))
    assert cli.main(["train", str(recipe), "--out", str(tmp_path / "out"), "--quiet",
                     'logging.sinks=["wandb"]']) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: logging.sinks: 'wandb' could not start a run: ") and "wandb login" in line
