"""Reading and writing IDX files (the MNIST / Fashion-MNIST format), gzipped or not."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from spnkit.data import DataError

_UBYTE = 0x08
_TYPES = {0x08: "unsigned bytes", 0x09: "signed bytes", 0x0B: "shorts", 0x0C: "ints", 0x0D: "floats",
          0x0E: "doubles"}
_CHUNK = 1 << 24  # read in pieces, so a header claiming a huge array costs only what the file holds


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode)


def _read(handle, size: int) -> bytearray:
    """Up to ``size`` bytes (fewer at the end of the file), in bounded pieces."""
    parts, left = [], size
    while left > 0:
        part = handle.read(min(left, _CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return bytearray().join(parts)


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file of unsigned bytes as a numpy uint8 array of its stored shape. A missing,
    damaged or truncated file is a ``DataError`` naming the file and what is wrong with it."""
    path = Path(path)
    try:
        with _open(path, "rb") as handle:
            return _parse(path, handle)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except gzip.BadGzipFile as exc:
        raise DataError(f"{path}: not gzip data ({exc}); IDX files named .gz must be gzipped") from None
    except EOFError:
        raise DataError(f"{path}: the gzip stream ends early (truncated file?)") from None
    except zlib.error as exc:
        raise DataError(f"{path}: damaged gzip data ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _parse(path: Path, handle) -> np.ndarray:
    magic = _read(handle, 4)
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _TYPES or not magic[3]:
        shown = " ".join(f"{b:02x}" for b in magic) or "nothing"
        raise DataError(f"{path}: not an IDX file (it starts with {shown}; IDX files start with "
                        "00 00, a type byte and a dimension count)")
    if magic[2] != _UBYTE:
        raise DataError(f"{path}: holds {_TYPES[magic[2]]}; only IDX files of unsigned bytes (type 08) are images")
    dims = magic[3]
    header = _read(handle, 4 * dims)
    if len(header) < 4 * dims:
        raise DataError(f"{path}: the header is cut short ({4 + len(header)} bytes; {dims} dimensions need "
                        f"{4 + 4 * dims})")
    shape = struct.unpack(f">{dims}I", header)
    expected = math.prod(shape)
    body = _read(handle, expected + 1)
    if len(body) != expected:
        described = "x".join(map(str, shape))
        if len(body) < expected:
            raise DataError(f"{path}: the header says {described} = {expected:,} bytes of data, the file holds "
                            f"{len(body):,} (truncated?)")
        raise DataError(f"{path}: more data than the header's {described} = {expected:,} bytes (damaged?)")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzipped when the name ends in .gz)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.GzipFile(path, "wb", mtime=0) if path.suffix == ".gz" else open(path, "wb")) as handle:
        handle.write(header + array.tobytes())
