"""Running out of memory ends in one error line that names what to lower."""

import pytest
import tomli_w

from spnkit import cli
from spnkit.core.system import AutoregressiveStage
from test_engine import RECIPE


def test_a_training_step_that_does_not_fit_is_one_error_line(tmp_path, monkeypatch, capsys):
    def allocation_fails(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 137438953472 bytes.")

    monkeypatch.setattr(AutoregressiveStage, "loss", allocation_fails)
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(RECIPE))
    assert cli.main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training stage 'low': out of memory ("), lines
    assert lines[0].endswith("lower train.batch_size (or raise train.accumulate), or narrow the stage's layers")


def test_other_runtime_errors_keep_their_traceback(tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("shape mismatch: a bug, not a setting")

    monkeypatch.setattr(AutoregressiveStage, "loss", bug)
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(RECIPE))
    with pytest.raises(RuntimeError, match="a bug, not a setting"):
        cli.main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"])
