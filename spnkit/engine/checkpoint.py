"""Stage checkpoints: checksummed files that survive a crash at any moment, what they are tied
to (the stage's fingerprint, plugin versions), and loading a trained pipeline from them.

A checkpoint file (format version 1) is a 52-byte header, then the payload::

    b"SPNKITCK" | version: uint32 LE | payload length: uint64 LE | SHA-256 of the payload: 32 bytes
    payload: torch.save of the state (tensors and plain containers only)

A file whose header, length or digest does not match is *damaged* and never unpickled; a
payload is only ever loaded with ``weights_only=True``, so loading never runs code from a file.
``save`` writes a temporary file in the same folder (locked while written: the lock dies with
its process), flushes it to disk and renames it over ``checkpoint.pt``; the one it replaces
becomes ``checkpoint.prev.pt`` only if it verifies, so a damaged file never displaces a good
one. ``load`` falls back to the previous checkpoint, with a warning, when the latest is damaged
or does not fit the model; both remove the temporary files of saves killed mid-write.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

from spnkit.core import build
from spnkit.core.errors import SpnkitError
from spnkit.core.system import Pipeline

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
REQUIRED = ("stage", "fingerprint", "model", "ema", "optimizer", "step")
MAGIC, VERSION = b"SPNKITCK", 1
HEADER = struct.Struct("<8sIQ32s")  # magic, version, payload length, SHA-256 of the payload


class CheckpointError(SpnkitError):
    """Checkpoints exist but none can be used, or one cannot be written; the message (one line)
    names the files or folder and why."""


class RecipeMismatch(SpnkitError):
    """A checkpoint was trained from a different recipe for this stage."""


class _Unusable(Exception):
    """A checkpoint file that cannot be used; the message says which and why (one line)."""


def stage_fingerprint(resolved: build.Resolved, name: str) -> str:
    """What a stage's weights depend on: its table, the data's shape and the quantizer."""
    raw = resolved.to_dict()
    return json.dumps({"stage": raw["stages"][name], "quantizer": raw["quantizer"],
                       "data": {k: raw["data"][k] for k in ("height", "width", "channels", "bits")}}, sort_keys=True)


def plugin_versions(resolved: build.Resolved) -> dict[str, str]:
    """``{"kind:name": "distribution version"}`` of every component the recipe uses."""
    chosen = [resolved.quantizer_choice]
    for plan in resolved.stages.values():
        chosen += [c for c in (plan.ordering, plan.encoder, plan.decoder, plan.conditioner) if c is not None]
    return {f"{c.entry.kind}:{c.entry.name}": f"{c.entry.provider.distribution} {c.entry.provider.version}"
            for c in chosen}


def load_trained(resolved: build.Resolved, out: Path) -> Pipeline:
    """The pipeline with every stage's Polyak-averaged weights from ``out/stages/NAME``."""
    pipeline = build.build_pipeline(resolved)
    for name, stage in pipeline.stages.items():
        folder = out / "stages" / name

        def use(state: dict, name=name, stage=stage, folder=folder) -> None:
            if state["fingerprint"] != stage_fingerprint(resolved, name):
                raise RecipeMismatch(f"{folder} holds stage {name!r} of a different recipe")
            stage.load_state_dict(state["ema"])

        if load(folder, use=use) is None:
            raise CheckpointError(f"no checkpoint for stage {name!r} in {folder}; train it first")
    return pipeline.eval()


def save(state: dict, folder: Path) -> Path:
    """Write ``state`` (tensors and plain containers only) as the latest checkpoint. The latest
    one it replaces becomes the previous one if it verifies, else it is dropped (the previous one
    stays). ``CheckpointError``, with the existing checkpoints intact, when writing fails."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    header = HEADER.pack(MAGIC, VERSION, len(payload), hashlib.sha256(payload).digest())
    latest, handle, temporary = folder / LATEST, None, None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale(folder)
        handle, temporary = _temporary(folder)
        for part in (header, payload):
            view = memoryview(part)
            while view:
                view = view[os.write(handle, view):]
        os.fsync(handle)
        if latest.exists() and _verifies(latest):
            os.replace(latest, folder / PREVIOUS)
        os.replace(temporary, latest)  # over a damaged latest one, if any
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the renames too survive a power cut
        finally:
            os.close(directory)
    except OSError as exc:
        raise CheckpointError(f"cannot write a checkpoint in {folder}: {exc.strerror or exc}") from None
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
        if handle is not None:
            os.close(handle)  # after the rename: until then the lock marks the file as in use
    return latest


def load(folder: Path, use: Callable[[dict], None] | None = None) -> dict | None:
    """The newest usable checkpoint in ``folder`` (None if there is none). ``use(state)``, if
    given, puts it to use (loads its weights into modules); a file whose weights do not fit
    (``load_state_dict`` finds a size mismatch, a missing or unexpected key) is unusable like a
    damaged one. An unusable latest one is reported with a warning naming the file and the
    reason, and the previous one tried; ``CheckpointError`` when checkpoints exist but none is
    usable."""
    _remove_stale(folder)
    reasons = []
    for name in (LATEST, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            state = _read(path)
            try:
                if use is not None:
                    use(state)
            except RuntimeError as exc:
                if not str(exc).startswith("Error(s) in loading state_dict"):
                    raise
                raise _Unusable(f"checkpoint {path} does not fit the model ({mismatch(exc)})") from None
            return state
        except _Unusable as exc:
            reasons.append(str(exc))
            if name == LATEST and (folder / PREVIOUS).exists():
                warnings.warn(f"{exc}; falling back to the previous one", stacklevel=2)
    if reasons:
        raise CheckpointError("; ".join(reasons) + f"; no usable checkpoint is left in {folder} "
                              "(delete the folder to start this stage over)")
    return None


def _payload(path: Path) -> bytes:
    """The payload of the checkpoint file at ``path``, its header, length and digest verified."""
    try:
        with open(path, "rb") as file:
            header, payload = file.read(HEADER.size), file.read()
    except OSError as exc:
        raise _Unusable(f"checkpoint {path} is unreadable ({exc.strerror or exc})") from None
    if len(header) < HEADER.size or not header.startswith(MAGIC):
        raise _Unusable(f"checkpoint {path} is unreadable (no spnkit checkpoint header: another file, or a "
                        "checkpoint from an spnkit before checksummed checkpoints, which is not read)")
    _, version, length, digest = HEADER.unpack(header)
    if version != VERSION:
        raise _Unusable(f"checkpoint {path} is unreadable (format version {version}; this spnkit reads {VERSION})")
    if len(payload) != length:
        raise _Unusable(f"checkpoint {path} is unreadable (damaged: {len(payload)} payload bytes, "
                        f"its header says {length})")
    if hashlib.sha256(payload).digest() != digest:
        raise _Unusable(f"checkpoint {path} is unreadable (damaged: its SHA-256 checksum does not match)")
    return payload


def _verifies(path: Path) -> bool:
    try:
        _payload(path)
    except _Unusable:
        return False
    return True


def _read(path: Path) -> dict:
    payload = _payload(path)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # a verified payload that torch cannot (or will not) unpickle
        raise _Unusable(f"checkpoint {path} is unreadable ({_why(exc)})") from None
    missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
    if missing:
        raise _Unusable(f"checkpoint {path} is unreadable (not an spnkit stage checkpoint: no {', '.join(missing)})")
    return state


def _why(exc: Exception) -> str:
    """One line on why torch refused a payload, without its advice to load it unsafely."""
    text = str(exc)
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsafe:
        return f"it would call {unsafe[1]} when loaded, and spnkit never runs code from a checkpoint"
    if "weights only" in text.lower() or "weights_only" in text:
        return "it holds objects other than tensors and plain containers, and spnkit never runs code from a checkpoint"
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def mismatch(exc: RuntimeError) -> str:
    """The first problem in ``load_state_dict``'s error, e.g. ``decoder.w has shape [4, 2] in the
    file, [8, 2] in the model``."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [str(exc).splitlines()[0]]
    size = re.match(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) from "
                    r"checkpoint, the shape in current model is torch\.Size\((\[.*?\])\)", lines[0])
    if size:
        return f"{size[1]} has shape {size[2]} in the file, {size[3]} in the model"
    keys = re.match(r"(Missing|Unexpected) key\(s\) in state_dict: \"([^\"]+)\"", lines[0])
    if keys:
        return f"{keys[1].lower()} key {keys[2]}"
    return lines[0].rstrip(".")


def _temporary(folder: Path) -> tuple[int, str]:
    """A new temporary file in ``folder``, open and locked: an unlocked one is a killed save's."""
    while True:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".checkpoint-", suffix=".tmp")
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(handle), os.stat(name)):
                return handle, name
        except FileNotFoundError:
            pass
        os.close(handle)  # removed as stale between its creation and the lock: take another


def _remove_stale(folder: Path) -> None:
    """Remove the temporary files of saves killed mid-write (a live save holds its file's lock)."""
    for path in folder.glob(".checkpoint-*.tmp"):
        try:
            with open(path, "rb") as file:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()
        except OSError:  # locked by a live save, gone already, or a folder we may not write
            pass
