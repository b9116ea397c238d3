"""Metric sinks: where training records go. JSONL always; TensorBoard when it is installed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol


class MetricSink(Protocol):
    def resume(self, stage: str, step: int) -> None:
        """``stage`` resumes from its checkpoint at ``step``: forget its records past it."""

    def write(self, record: dict) -> None:
        """One record: ``stage``, ``step`` and numbers (loss, bits/dim, lr, images/s, ...)."""

    def close(self) -> None: ...


class JsonlSink:
    """One JSON object per line, appended (``OUT/metrics.jsonl``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resume(self, stage: str, step: int) -> None:
        trim_metrics(self.path, stage, step)

    def write(self, record: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def close(self) -> None:
        pass


class TensorBoardSink:
    """Every number of a record as a scalar ``STAGE/NAME`` at its step (``OUT/tensorboard``)."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def resume(self, stage: str, step: int) -> None:
        """Nothing: TensorBoard shows the latest value written at a step."""

    def write(self, record: dict) -> None:
        for key, value in record.items():
            if key not in ("stage", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{record['stage']}/{key}", value, record["step"])

    def close(self) -> None:
        self.writer.close()


def open_sinks(out: Path) -> list[MetricSink]:
    """The sinks of a run writing into ``out``: JSONL, and TensorBoard if it is installed."""
    sinks: list[MetricSink] = [JsonlSink(out / "metrics.jsonl")]
    try:
        sinks.append(TensorBoardSink(out / "tensorboard"))
    except ImportError:
        pass
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
