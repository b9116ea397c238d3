"""A wheel built from the repository carries what a user needs away from it: installed alone in
a fresh environment, ``spnkit run quickstart`` (a bundled recipe by name, on the embedded data)
trains, evaluates and samples from an empty folder."""

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_runs_the_bundled_quickstart_from_an_empty_folder(tmp_path):
    # built from a copy of the source (pip builds in the tree it is given: no build/ left in the checkout)
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(wheels)],
                   check=True, timeout=600)
    [wheel] = wheels.glob("spnkit-*.whl")
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, timeout=600)
    # the dependencies (torch, ...) from this environment, after the fresh one's own site-packages,
    # without its .pth files: spnkit itself comes from the wheel, never from this checkout
    [own] = [p for p in (env_dir / "lib").glob("python*/site-packages")]
    (own / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "SPNKIT_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONPATH": ""}

    def run(*args: str) -> str:
        done = subprocess.run([str(env_dir / "bin" / "spnkit"), *args], cwd=empty, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = subprocess.run([str(python), "-c", "import spnkit; print(spnkit.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(own)
    assert "quickstart " in run("recipes")
    run("run", "quickstart", "data.source=\"fashion_mnist_embedded\"", "train.steps=5", "train.batch_size=8",
        "eval.max_images=20", "sample.count=1", "--quiet")
    out = empty / "runs" / "quickstart"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["images"] == 20 and "embedded" in summary["test_data"]
    assert (out / "recipe.toml").exists() and (out / "samples.png").stat().st_size > 0
    assert sorted(p.name for p in empty.iterdir()) == ["runs"]  # nothing written beside the run
