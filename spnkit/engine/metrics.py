"""Metric sinks: where a run's records go (``[logging] sinks``). JSONL always
(``OUT/metrics.jsonl``); TensorBoard (``OUT/tensorboard``) and Weights & Biases when asked for.

Each sink gets every training record (``stage``, ``step``, loss, bits/dim, learning rate,
gradient norm, images/s) and, at the end of ``spnkit run``, the evaluation: test bits/dim of the
system and each stage, the hyperparameters (the resolved recipe) and the grid of samples.
A sink asked for whose package is missing is a ``SinkError`` naming the package; TensorBoard in
the default list is skipped with one warning.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np

from spnkit.core import build
from spnkit.core.errors import SpnkitError
from spnkit.engine.evaluate import system_figure

DEFAULT = ["jsonl", "tensorboard"]  # the recipe's default logging.sinks
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}  # sink -> the package it needs


class SinkError(SpnkitError):
    """A sink named in ``logging.sinks`` cannot run (its package is not installed)."""


class MetricSink(Protocol):
    def resume(self, stage: str, step: int) -> None:
        """``stage`` resumes from its checkpoint at ``step``: forget its records past it."""

    def write(self, record: dict) -> None:
        """One training record: ``stage``, ``step`` and numbers (loss, bits/dim, lr, images/s, ...)."""

    def evaluation(self, result: dict, step: int, samples: np.ndarray | None) -> None:
        """The run's exact evaluation (``test_bits_per_dim``, ``stages``: each stage's share,
        ``test_bits_per_subpixel``: each stage's bits over the subpixels it models, as its loss,
        ``images``) after ``step`` training steps, and a grid of samples ``[H, W, C]`` uint8."""

    def close(self) -> None: ...


class JsonlSink:
    """One JSON object per line, appended (``OUT/metrics.jsonl``): training records (with a
    ``stage``) and evaluations (``"kind": "evaluation"``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resume(self, stage: str, step: int) -> None:
        trim_metrics(self.path, stage, step)

    def write(self, record: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def evaluation(self, result: dict, step: int, samples: np.ndarray | None) -> None:
        key, figure = system_figure(result)  # test_bits_per_dim, or the figure given each image's code
        self.write({"kind": "evaluation", "step": step, key: figure, "stages": result["stages"], "images": result["images"],
                    "test_bits_per_subpixel": result.get("test_bits_per_subpixel", {})})

    def close(self) -> None:
        pass


def numbers(record: dict) -> dict[str, float]:
    """A training record's numbers as ``{"STAGE/NAME": value}``."""
    return {f"{record['stage']}/{key}": value for key, value in record.items()
            if key not in ("stage", "step") and isinstance(value, (int, float)) and not isinstance(value, bool)}


def evaluation_numbers(result: dict) -> dict[str, float]:
    """``{"eval/test_bits_per_dim": system, "eval/STAGE": share, ...}`` (for a system given its
    codes, ``eval/test_bits_per_dim_given_code``)."""
    key, figure = system_figure(result)
    return {f"eval/{key}": figure,
            **{f"eval/{name}": share for name, share in result["stages"].items()}}


def hyperparameters(resolved: build.Resolved) -> dict[str, float | int | str | bool]:
    """The resolved recipe flattened to ``{"train.steps": 1800, "stages.low.decoder.plugin":
    "hybrid", ...}`` (lists as text), as TensorBoard's hyperparameter table takes them."""
    flat = {}

    def walk(value, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else key)
        else:
            flat[path] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)

    walk(resolved.to_dict(), "")
    return flat


class TensorBoardSink:
    """``OUT/tensorboard``: every number of a training record as a scalar ``STAGE/NAME`` at its
    step; the evaluation as scalars ``eval/...``, the hyperparameters (``add_hparams``, with the
    test bits/dim as its metrics) and the sample grid as the image ``samples``."""

    def __init__(self, folder: Path, resolved: build.Resolved) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))
        self.resolved = resolved

    def resume(self, stage: str, step: int) -> None:
        """Nothing: TensorBoard shows the latest value written at a step."""

    def write(self, record: dict) -> None:
        for tag, value in numbers(record).items():
            self.writer.add_scalar(tag, value, record["step"])

    def evaluation(self, result: dict, step: int, samples: np.ndarray | None) -> None:
        figures = evaluation_numbers(result)
        for tag, value in figures.items():
            self.writer.add_scalar(tag, value, step)
        if samples is not None:
            self.writer.add_image("samples", samples, step, dataformats="HWC")
        metrics = {f"hparam/{tag.removeprefix('eval/')}": value for tag, value in figures.items()}
        self.writer.add_hparams(hyperparameters(self.resolved), metrics, run_name=".", global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A Weights & Biases run (``WANDB_PROJECT``, default ``spnkit``; ``WANDB_MODE=offline``
    writes it under ``OUT/wandb`` only), its config the resolved recipe. Each stage's numbers
    are plotted against its own step (``STAGE/step``), as stages train one after another; the
    evaluation goes to the run's summary and the samples as an image. The run's id is kept in
    ``OUT/wandb-id``, so a resumed spnkit run continues the same W&B run."""

    def __init__(self, out: Path, resolved: build.Resolved) -> None:
        import wandb

        self.wandb = wandb
        id_file = out / "wandb-id"
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        id_file.write_text(run_id + "\n")
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "spnkit"),
                                  name=resolved.recipe.name or None, id=run_id, resume="allow", dir=str(out),
                                  config=resolved.to_dict())
        except wandb.errors.Error as exc:  # not logged in, no network, ...: W&B's own words
            raise SinkError(f"logging.sinks: 'wandb' could not start a run: {exc} "
                            "(or WANDB_MODE=offline keeps the run in OUT/wandb)") from None
        self.stages: set[str] = set()

    def resume(self, stage: str, step: int) -> None:
        """Nothing: a resumed stage logs its steps again, against its own step axis."""

    def write(self, record: dict) -> None:
        stage = record["stage"]
        if stage not in self.stages:
            self.stages.add(stage)
            self.run.define_metric(f"{stage}/step")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
        self.run.log({f"{stage}/step": record["step"], **numbers(record)})

    def evaluation(self, result: dict, step: int, samples: np.ndarray | None) -> None:
        figures = evaluation_numbers(result)
        logged = dict(figures)
        if samples is not None:
            logged["samples"] = self.wandb.Image(samples)
        self.run.log(logged)
        self.run.summary.update({**figures, "eval/images": result["images"], "eval/after_steps": step})

    def close(self) -> None:
        self.run.finish()


def open_sinks(out: Path, resolved: build.Resolved) -> list[MetricSink]:
    """The sinks of ``logging.sinks`` writing into ``out`` (JSONL always, first). A sink whose
    package is missing: a ``SinkError`` when the recipe asks for it, one warning when it is only
    the default's TensorBoard."""
    asked = resolved.recipe.logging.sinks
    missing = [name for name in dict.fromkeys(asked) if name in PACKAGES
               and importlib.util.find_spec(PACKAGES[name]) is None]
    if missing and asked == DEFAULT:
        warnings.warn("tensorboard is not installed, so this run writes no TensorBoard logs "
                      "(pip install tensorboard; logging.sinks = [\"jsonl\"] says you want none)", stacklevel=2)
    elif missing:
        raise SinkError("\n".join(f"logging.sinks: {name!r} needs the {PACKAGES[name]} package: pip install "
                                  f"{PACKAGES[name]} (or pip install 'spnkit[{name}]')" for name in missing))
    sinks: list[MetricSink] = [JsonlSink(out / "metrics.jsonl")]
    if "tensorboard" in asked and "tensorboard" not in missing:
        sinks.append(TensorBoardSink(out / "tensorboard", resolved))
    if "wandb" in asked:
        sinks.append(WandbSink(out, resolved))
    return sinks


def trim_metrics(path: Path, stage: str, step: int) -> None:
    """Drop ``stage``'s records after ``step`` (written before a crash, beyond the checkpoint
    a run resumes from), so a resumed run's metrics read like an uninterrupted run's."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a crash
            continue
        if record.get("stage") != stage or record.get("step", 0) <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept != lines:
        temporary = path.with_suffix(".jsonl.tmp")
        temporary.write_text("".join(kept))
        os.replace(temporary, path)
