"""Atomic checkpoints that survive a crash at any moment.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over ``checkpoint.pt``; the one it replaces is kept as ``checkpoint.prev.pt``. Loading uses
``weights_only=True`` and falls back to the previous checkpoint when the latest is damaged.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


def save(state: dict, folder: Path) -> Path:
    """Write ``state`` (tensors and plain containers only) as the latest checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        latest = folder / LATEST
        if latest.exists():
            os.replace(latest, folder / PREVIOUS)
        os.replace(temporary, latest)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return folder / LATEST


def load(folder: Path) -> dict | None:
    """The newest readable checkpoint in ``folder`` (None if there is none); a damaged latest
    one is reported with a warning naming the file and the reason."""
    for name in (LATEST, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or corrupt file: try the previous one
            warnings.warn(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); "
                          "falling back to the previous one", stacklevel=2)
    return None
