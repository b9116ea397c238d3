"""The output folder: one spnkit process at a time (an OS lock that dies with its process), and
an --out that is a file, not writable, or on a full disk is one ``error:`` line, exit 2, with the
checkpoints already there untouched."""

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from spnkit import cli
from spnkit.engine.metrics import JsonlSink
from test_engine import RECIPE, spnkit

LOCK = ".spnkit.lock"


@pytest.fixture
def recipe(tmp_path) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(tomli_w.dumps(RECIPE))
    return str(path)


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.strip()]


def checkpoint_bytes(out: Path) -> dict[str, bytes]:
    found = {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "stages").rglob("*")) if p.is_file()}
    assert found
    return found


def holder_pid(out: Path, process: subprocess.Popen, timeout: float = 120) -> int:
    """Waits until ``process`` has claimed ``out`` (its pid in the lock file)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.stderr.read()
        with contextlib.suppress(OSError, ValueError):
            if json.loads((out / LOCK).read_text())["pid"] == process.pid:
                return process.pid
        time.sleep(0.05)
    raise AssertionError(f"{process.args} did not claim {out}")


def test_a_busy_folder_is_one_error_line_and_a_killed_holder_leaves_no_lock(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    holder = spnkit("train", recipe, "--stage", "low", "--out", out, "--quiet", "train.steps=1000000")
    try:
        pid = holder_pid(out, holder)
        busy = (f"error: {out} is in use by another spnkit process (pid {pid}, spnkit train); "
                "wait for it or choose another --out")
        for command in (["train", "--stage", "low"], ["run"], ["eval"], ["sample", "--count", "1"]):
            assert cli.main([command[0], recipe, *command[1:], "--out", str(out), "--quiet"]) == 2, command
            assert error_lines(capsys) == [busy], command
        assert holder.poll() is None  # and the holder trains on
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # no stale lock: the folder is free the moment its holder is gone
    assert cli.main(["train", recipe, "--stage", "low", "--out", str(out), "--quiet", "train.steps=1"]) == 0


PROBE = """
import sys
from pathlib import Path
from spnkit.engine.out_folder import FolderBusy, claim
try:
    with claim(Path(sys.argv[1]), "probe", shared=sys.argv[2] == "shared"):
        pass
except FolderBusy as exc:
    print(exc)
    sys.exit(3)
"""


def probe(out: Path, mode: str) -> int:
    """Another process's claim on ``out``: 0 (got it) or 3 (busy)."""
    return subprocess.run([sys.executable, "-c", PROBE, str(out), mode], capture_output=True, timeout=60).returncode


def test_readers_share_a_folder_writers_do_not_and_claims_nest(tmp_path):
    from spnkit.engine.out_folder import claim

    out = tmp_path / "run"
    out.mkdir()
    with claim(out, "eval", shared=True):
        assert probe(out, "shared") == 0
        assert probe(out, "exclusive") == 3
    with claim(out, "run"):
        with claim(out, "train"):  # run trains: the inner claim must not drop the outer one
            pass
        assert probe(out, "shared") == 3
    assert probe(out, "exclusive") == 0


def test_out_that_is_a_file_is_one_error_line(recipe, tmp_path, capsys):
    out = tmp_path / "a file"
    out.write_text("mine")
    for command in (["train"], ["run"], ["eval"], ["sample"]):
        assert cli.main([command[0], recipe, "--out", str(out), "--quiet"]) == 2, command
        assert error_lines(capsys) == [f"error: --out {out} is a file, not a folder"], command
    assert out.read_text() == "mine"


def without_write_powers() -> list[str] | None:
    """A command prefix under which file permissions hold: none for a plain user; for root,
    setpriv dropping the capabilities that override them; None when neither is possible."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    caps = "-dac_override,-dac_read_search"
    prefix = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]
    return prefix if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0 else None


UNWRITABLE = """
import contextlib, io, json, sys
from spnkit import cli
results = []
for out in sys.argv[2:]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["train", sys.argv[1], "--stage", "low", "--out", out, "--quiet", "train.steps=1"])
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_unwritable_out_is_one_error_line(recipe, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    outs = [locked / "run", locked]
    expected = [f"error: --out {locked / 'run'}: cannot create the folder (Permission denied)",
                f"error: --out {locked}: cannot write into the folder (Permission denied)"]
    try:
        prefix = without_write_powers()
        if prefix is not None:  # the real thing: the kernel refuses
            env = {**os.environ, "SPNKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
            done = subprocess.run([*prefix, sys.executable, "-c", UNWRITABLE, recipe, *map(str, outs)], env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            results = json.loads(done.stdout)
        else:  # root without setpriv: refuse as the kernel would for a plain user
            def refuse(real):
                def call(path, *args, **kwargs):
                    if Path(os.fspath(path)).parent == locked:
                        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
                    return real(path, *args, **kwargs)
                return call

            monkeypatch.setattr(os, "mkdir", refuse(os.mkdir))
            monkeypatch.setattr(os, "open", refuse(os.open))
            results = []
            for out in outs:
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    code = cli.main(["train", recipe, "--stage", "low", "--out", str(out), "--quiet",
                                     "train.steps=1"])
                results.append([code, err.getvalue()])
    finally:
        locked.chmod(0o700)
    for (code, err), line in zip(results, expected):
        assert code == 2 and "Traceback" not in err, err
        assert err.strip().splitlines() == [line]
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (writes to it fail with ENOSPC)")
def test_full_disk_writing_the_summary_is_one_error_line(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", recipe, "--out", str(out), "--quiet", "train.steps=2", "eval.max_images=10"]
    assert cli.main(args) == 0
    before = checkpoint_bytes(out)
    (out / "summary.json").unlink()
    (out / "summary.json").symlink_to("/dev/full")  # the kernel's full disk: every write is ENOSPC
    assert cli.main(args) == 2
    assert error_lines(capsys) == [f"error: cannot write {out / 'summary.json'} (No space left on device)"]
    assert checkpoint_bytes(out) == before


def test_full_disk_writing_metrics_is_one_error_line(recipe, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["train", recipe, "--stage", "low", "--out", str(out), "--quiet"]
    assert cli.main([*args, "train.steps=5"]) == 0
    before = checkpoint_bytes(out)

    def full(self, record):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(JsonlSink, "write", full)
    assert cli.main([*args, "train.steps=10"]) == 2  # fails at step 10's record, before its checkpoint
    assert error_lines(capsys) == [f"error: cannot write {out / 'metrics.jsonl'} (No space left on device)"]
    assert checkpoint_bytes(out) == before
