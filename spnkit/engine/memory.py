"""Running out of memory is a setting to change, not a crash: one error line that says what to lower."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from spnkit.core.errors import SpnkitError


class OutOfMemory(SpnkitError):
    """A step, an evaluation batch or a sample did not fit in the device's memory."""


def _is_out_of_memory(exc: BaseException) -> bool:
    # CPU allocations fail with a plain RuntimeError from c10's allocator
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


@contextlib.contextmanager
def fits_in_memory(work: str, advice: str) -> Iterator[None]:
    """Turn an allocation failure inside the block into ``OutOfMemory``: ``work`` (``training
    stage low``) ran out of memory; ``advice`` names the settings that shrink it."""
    try:
        yield
    except Exception as exc:
        if not _is_out_of_memory(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OutOfMemory(f"{work}: out of memory ({first}); {advice}") from None
