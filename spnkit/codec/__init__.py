"""Lossless compression with a trained pipeline: its exact per-subpixel probabilities drive a
range coder (``constriction``), so an image costs about its NLL in bits.

``compress(pipeline, images) -> bytes`` (``encode`` then ``pack``) and ``decompress(pipeline,
data) -> images``; ``container``
describes the file, ``coding`` the walk both sides share, ``entropy`` the coder. The codec
imports only the core.
"""

from spnkit.codec.api import Encoded, compress, decompress, encode, fingerprint, pack, read
from spnkit.codec.container import CodecError, Container

__all__ = ["CodecError", "Container", "Encoded", "compress", "decompress", "encode", "fingerprint", "pack", "read"]
