"""spnkit.load and spnkit export: a trained run (or its export) loads in one line to the weights
the run evaluated, exports as safetensors with its recipe, and loading never runs code from a
file: crafted pickles are refused and the file their unpickling would create never appears."""

import copy
import hashlib
import io
import json

import pytest
import safetensors
import tomli_w
import torch

import spnkit
from spnkit import cli
from spnkit.core import build
from spnkit.core.errors import SpnkitError
from spnkit.engine import checkpoint, run
from spnkit.engine.export import LoadError
from test_engine import RECIPE


def short_recipe(folder, **stage_tables):
    """``folder/tiny.toml``: test_engine's tiny two-stage recipe for 4 steps, scored on 20 test
    images, each stage given ``stage_tables`` (e.g. a conditioner)."""
    raw = copy.deepcopy(RECIPE)
    raw["train"].update({"steps": 4, "checkpoint_every": 2})
    raw["eval"]["max_images"] = 20
    for stage in raw["stages"].values():
        stage.update(stage_tables)
    path = folder / "tiny.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run folder of a tiny two-stage system, trained, evaluated and sampled by spnkit run."""
    folder = tmp_path_factory.mktemp("export")
    assert cli.main(["run", str(short_recipe(folder)), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def test_load_gives_the_pipeline_the_run_evaluated(trained):
    pipeline = spnkit.load(trained, device="cpu")
    assert not pipeline.training and next(pipeline.parameters()).device.type == "cpu"
    resolved = build.load(str(trained / "recipe.toml"))
    result = run.evaluation(resolved, pipeline, progress=False)
    summary = json.loads((trained / "summary.json").read_text())
    assert result["test_bits_per_dim"] == summary["test_bits_per_dim"]
    assert result["stages"] == summary["stages"]


def test_export_writes_safetensors_and_loads_to_the_same_model(trained, tmp_path, capsys):
    out = tmp_path / "shared"
    assert cli.main(["export", str(trained), "-o", str(out)]) == 0
    assert f"wrote {out / 'recipe.toml'}" in capsys.readouterr().out
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {
        "recipe.toml", "plugins.json", "stages/low/model.safetensors", "stages/high/model.safetensors"}
    with safetensors.safe_open(str(out / "stages/low/model.safetensors"), framework="pt") as file:
        assert file.metadata()["stage"] == "low" and file.metadata()["weights"] == "polyak average"
    assert json.loads((out / "plugins.json").read_text())[0]["kind"] == "quantizer"

    from_run, from_export = spnkit.load(trained, device="cpu"), spnkit.load(out, device="cpu")
    levels = torch.randint(0, 256, (3, 1, 28, 28))
    a, b = from_run.log_prob(levels), from_export.log_prob(levels)
    assert a.keys() == b.keys() == {"low", "high"}
    for name in a:
        assert torch.equal(a[name], b[name])
    ema = checkpoint.load(trained / "stages" / "low")["ema"]
    assert all(torch.equal(ema[k], v) for k, v in from_export.stages["low"].state_dict().items())


def test_export_refuses_a_folder_in_use_and_a_folder_that_is_no_run(trained, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    assert cli.main(["export", str(trained), "-o", str(tmp_path / "full")]) == 2
    assert capsys.readouterr().err.startswith(f"error: -o {tmp_path / 'full'}: exists and is not an empty folder")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    assert cli.main(["export", str(tmp_path / "nothing"), "-o", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'nothing'}: not a folder")
    with pytest.raises(LoadError, match="no recipe.toml and no stage checkpoints"):
        spnkit.load(tmp_path / "full")


class CreatesAFile:
    """Unpickling it would call ``open(path, "w")``: code run from a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def pickled(marker) -> bytes:
    """A torch.save file of a stage checkpoint whose model holds a ``CreatesAFile``."""
    buffer = io.BytesIO()
    torch.save({"stage": "low", "fingerprint": "x", "model": {"w": CreatesAFile(marker)}, "ema": {},
                "optimizer": {}, "step": 0}, buffer)
    return buffer.getvalue()


def test_the_crafted_pickle_would_create_a_file_if_unpickled(tmp_path):
    """So the refusals below are of a file that would really run code."""
    torch.load(io.BytesIO(pickled(tmp_path / "proof")), weights_only=False)
    assert (tmp_path / "proof").exists()


def copy_run(trained, tmp_path):
    copied = tmp_path / "run"
    for path in trained.rglob("*"):
        if path.is_file() and ".spnkit.lock" not in path.name:
            target = copied / path.relative_to(trained)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (copied / "stages" / "low" / checkpoint.PREVIOUS).unlink(missing_ok=True)
    return copied


@pytest.mark.parametrize("with_header", [False, True])
def test_a_checkpoint_holding_a_pickled_object_is_refused_and_runs_nothing(trained, tmp_path, with_header):
    folder = copy_run(trained, tmp_path)
    marker = tmp_path / "created-by-unpickling"
    payload = pickled(marker)
    if with_header:  # a valid spnkit header and checksum around it: only weights_only stands in the way
        payload = checkpoint.HEADER.pack(checkpoint.MAGIC, checkpoint.VERSION, len(payload),
                                         hashlib.sha256(payload).digest()) + payload
    (folder / "stages" / "low" / checkpoint.LATEST).write_bytes(payload)
    with pytest.raises(SpnkitError) as refused:
        spnkit.load(folder, device="cpu")
    message = str(refused.value)
    assert "stages/low/checkpoint.pt is unreadable" in message
    if with_header:
        assert "spnkit never runs code from a checkpoint" in message
    assert not marker.exists()


def test_exported_weights_that_are_a_pickle_are_refused_and_run_nothing(trained, tmp_path):
    out = tmp_path / "shared"
    assert cli.main(["export", str(trained), "-o", str(out)]) == 0
    marker = tmp_path / "created-by-unpickling"
    (out / "stages" / "high" / "model.safetensors").write_bytes(pickled(marker))
    with pytest.raises(LoadError, match=r"stages/high/model\.safetensors: not a safetensors file"):
        spnkit.load(out, device="cpu")
    assert not marker.exists()


def test_loading_weights_of_another_plugin_version_warns(trained, tmp_path):
    out = tmp_path / "shared"
    assert cli.main(["export", str(trained), "-o", str(out)]) == 0
    used = json.loads((out / "plugins.json").read_text())
    used[0]["version"] = "0.0.1"
    (out / "plugins.json").write_text(json.dumps(used))
    with pytest.warns(UserWarning, match=r"quantizer 'depth_split' was spnkit 0\.0\.1; spnkit .* is installed"):
        spnkit.load(out, device="cpu")
