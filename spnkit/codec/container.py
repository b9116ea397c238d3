"""The compressed file (format version 1): a 52-byte prefix, then the body it checksums.

Prefix, as in checkpoint files::

    b"SPNKITCX" | version: uint32 LE | body length: uint64 LE | SHA-256 of the body: 32 bytes

Body (integers little-endian)::

    model fingerprint: 32 bytes (SHA-256 of the model's recipe and weights)
    channels: uint8 | height: uint16 | width: uint16 | bits: uint8 (levels are 0..2**bits-1)
    count: uint32 images | chunk: uint16 images coded together | about length: uint32
    about: zlib-compressed UTF-8 JSON (image names, the recipe, where the coder ran, ...)
    index: per image, its stream's length in 32-bit words (LEB128) and the CRC-32 of its levels
    streams: the images' range-coded streams, back to back, in image order

Image ``i`` was coded as row ``i % chunk`` of chunk ``i // chunk`` (the last chunk padded), so it
decodes alone from its own stream. ``unpack`` verifies the prefix and checksum before reading
anything else; every way a file can be damaged ends in ``CodecError``.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import attrs

from spnkit.core.errors import SpnkitError

MAGIC, VERSION = b"SPNKITCX", 1
PREFIX = struct.Struct("<8sIQ32s")  # magic, version, body length, SHA-256 of the body
FIELDS = struct.Struct("<32sBHHBIHI")  # fingerprint, channels, height, width, bits, count, chunk, about length
CHECK = struct.Struct("<I")


class CodecError(SpnkitError):
    """A compressed file that cannot be decoded as it is (damaged, truncated, not one at all,
    or made with another model); the message is one line."""


@attrs.frozen
class Container:
    """A compressed set of images: what ``pack`` writes and ``unpack`` reads."""

    model: bytes  # 32-byte fingerprint
    shape: tuple[int, int, int]  # (C, H, W)
    bits: int
    chunk: int
    about: dict  # JSON-compatible
    checks: list[int]  # CRC-32 of each image's levels
    streams: list[bytes]  # each image's stream, a whole number of 32-bit words

    @property
    def count(self) -> int:
        return len(self.streams)


def pack(container: Container) -> bytes:
    """The file's bytes."""
    about = zlib.compress(json.dumps(container.about, separators=(",", ":")).encode(), 9)
    index = b"".join(_varint(len(stream) // 4) + CHECK.pack(check)
                     for stream, check in zip(container.streams, container.checks))
    body = b"".join([FIELDS.pack(container.model, *container.shape, container.bits, container.count,
                                 container.chunk, len(about)), about, index, *container.streams])
    return PREFIX.pack(MAGIC, VERSION, len(body), hashlib.sha256(body).digest()) + body


def unpack(data: bytes, name: str = "the file") -> Container:
    """Read and verify a file's bytes; ``CodecError`` naming ``name`` and the problem."""
    if len(data) < PREFIX.size or not data.startswith(MAGIC):
        raise CodecError(f"{name} is not an spnkit compressed file (no SPNKITCX header)")
    _, version, length, digest = PREFIX.unpack_from(data)
    if version != VERSION:
        raise CodecError(f"{name} has format version {version}; this spnkit reads version {VERSION}")
    body = data[PREFIX.size :]
    if len(body) != length:
        raise CodecError(f"{name} is damaged: {len(body)} bytes after its header, which says {length} "
                         f"({'truncated' if len(body) < length else 'extra bytes at the end'})")
    if hashlib.sha256(body).digest() != digest:
        raise CodecError(f"{name} is damaged: its SHA-256 checksum does not match")
    try:
        return _parse(body)
    except (struct.error, zlib.error, ValueError, UnicodeDecodeError, IndexError) as exc:
        raise CodecError(f"{name} is malformed ({type(exc).__name__}: {exc})") from None


def _parse(body: bytes) -> Container:
    model, channels, height, width, bits, count, chunk, about_length = FIELDS.unpack_from(body)
    at = FIELDS.size + about_length
    about = json.loads(zlib.decompress(body[FIELDS.size : at]))
    lengths, checks = [], []
    for _ in range(count):
        words, at = _read_varint(body, at)
        lengths.append(4 * words)
        checks.append(CHECK.unpack_from(body, at)[0])
        at += CHECK.size
    streams = []
    for length in lengths:
        streams.append(body[at : at + length])
        at += length
    if at != len(body) or not isinstance(about, dict) or not chunk:
        raise ValueError("the index does not describe the streams")
    return Container(model, (channels, height, width), bits, chunk, about, checks, streams)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, low = value >> 7, value & 0x7F
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at
