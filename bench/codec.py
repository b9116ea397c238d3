"""Lossless compression of Fashion-MNIST test images with a trained run: spnkit's file against
PNG (Pillow, optimize=True), WebP lossless (Pillow) and JPEG XL lossless (imagecodecs, when
installed: ``pip install -e '.[bench]'``), and the codec's own checks, measured in one run:

* every image decodes bit-exactly, for each ``--batch`` (images coded together), all at once;
  the first ``--alone`` images of a ``--alone-batch`` file also each decoded alone;
* the file's size against the model's exact NLL, per stage (stream bits) and in total (+ header).

Sizes are bits/dim for the set (one file; the other formats get one grid image of every image)
and per image (one file per image: the mean). spnkit runs on the CPU with one thread.

    python bench/codec.py --run runs/quickstart [--recipe recipes/quickstart.toml] [--images 1000]
        [--batch 100 50] [--alone 40 --alone-batch 4]
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path

import attrs
import numpy as np
import torch
from PIL import Image

from spnkit import codec
from spnkit.core import build
from spnkit.data.idx import read_idx
from spnkit.data.sources import EMBEDDED, SYSTEM_FASHION_MNIST
from spnkit.engine.checkpoint import load_trained

try:
    import imagecodecs
except ImportError:
    imagecodecs = None


def test_images(count: int) -> np.ndarray:
    """The first ``count`` Fashion-MNIST test images ``[N, 28, 28]`` uint8 (the full set when installed)."""
    folder = SYSTEM_FASHION_MNIST if SYSTEM_FASHION_MNIST.is_dir() else EMBEDDED
    return read_idx(folder / "t10k-images-idx3-ubyte.gz")[:count]


def grid(images: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` -> one ``[rows*H, cols*W]`` image (blank cells at the end)."""
    n, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cells = np.concatenate([images, np.zeros((rows * cols - n, h, w), np.uint8)])
    return cells.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)


def pillow(kind: str, **options):
    def encode(image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=kind, **options)
        return buffer.getvalue()

    def decode(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)).convert("L"))  # WebP has no grey mode: it decodes as RGB

    return encode, decode


def baselines() -> dict:
    found = {"PNG (Pillow, optimize=True)": pillow("PNG", optimize=True),
             "WebP lossless (Pillow, method 6)": pillow("WEBP", lossless=True, quality=100, method=6)}
    if imagecodecs is not None and imagecodecs.JPEGXL.available:
        found["JPEG XL lossless (imagecodecs, effort 9)"] = (
            lambda image: imagecodecs.jpegxl_encode(image, lossless=True, effort=9), imagecodecs.jpegxl_decode)
    return found


def baseline_row(name: str, encode, decode, images: np.ndarray) -> list:
    dims = images.size
    started = time.perf_counter()
    files = [encode(image) for image in images]
    encode_rate = len(images) / (time.perf_counter() - started)
    started = time.perf_counter()
    assert all(np.array_equal(decode(data), image) for data, image in zip(files, images)), name
    decode_rate = len(images) / (time.perf_counter() - started)
    whole = encode(grid(images))
    return [name, 8 * len(whole) / dims, 8 * sum(map(len, files)) / dims, encode_rate, decode_rate]


def nll_bits(pipeline, levels: torch.Tensor) -> dict[str, float]:
    """Each stage's exact NLL over ``levels``, in bits."""
    totals = dict.fromkeys(pipeline.stages, 0.0)
    with torch.no_grad():
        for start in range(0, len(levels), 100):
            for name, log_prob in pipeline.log_prob(levels[start : start + 100]).items():
                totals[name] += float(-log_prob.double().sum()) / math.log(2)
    return totals


def spnkit_rows(pipeline, levels: torch.Tensor, batch: int, nll: dict[str, float]) -> tuple[list, list]:
    """The table row's numbers for one ``batch`` and the size-against-NLL rows; checks the round trip."""
    dims = levels.numel()
    started = time.perf_counter()
    coded = codec.encode(pipeline, levels, chunk=batch)
    encode_rate = len(levels) / (time.perf_counter() - started)
    data = codec.pack(pipeline, coded)
    started = time.perf_counter()
    assert torch.equal(codec.decompress(pipeline, data), levels), f"batch {batch}: not bit-exact"
    decode_rate = len(levels) / (time.perf_counter() - started)
    alone = [len(codec.pack(pipeline, attrs.evolve(coded, chunk=1, checks=[check], streams=[stream])))
             for check, stream in zip(coded.checks, coded.streams)]  # the size of a file of that image alone
    row = [8 * len(data) / dims, 8 * sum(alone) / dims, encode_rate, decode_rate]
    streams, total = 8 * sum(map(len, coded.streams)), sum(nll.values())
    header = 8 * len(data) - streams
    overhead = streams - sum(coded.stage_bits.values())
    sizes = [[f"stage {name}: information under the coded tables", f"{nll[name]:,.0f}", f"{coded.stage_bits[name]:,.0f}",
              f"{coded.stage_bits[name] / nll[name] - 1:+.3%} of its NLL"] for name in nll]
    sizes.append(["range coder: quantization, stream ends", "", f"{overhead:,.0f}", f"{overhead / total:+.3%} of the NLL"])
    sizes.append(["header: fields, about, index", "", f"{header:,}", f"{header / total:+.3%} of the NLL"])
    sizes.append(["file", f"{total:,.0f}", f"{8 * len(data):,}",
                  f"{8 * len(data) / (total + header) - 1:+.3%} of NLL + header"])
    return row, sizes


def check_alone(pipeline, levels: torch.Tensor, batch: int) -> float:
    """Decode each image of a ``batch`` file alone; seconds per image."""
    data = codec.compress(pipeline, levels, chunk=batch)
    started = time.perf_counter()
    for i in range(len(levels)):
        assert torch.equal(codec.decompress(pipeline, data, indices=[i]), levels[i : i + 1]), f"image {i} alone"
    return (time.perf_counter() - started) / len(levels)


def table(head: list[str], rows: list[list], formats: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(f.format(cell) for f, cell in zip(formats, row)) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="the trained run's folder")
    parser.add_argument("--recipe", default="recipes/quickstart.toml")
    parser.add_argument("--images", type=int, default=1000, help="the first N test images")
    parser.add_argument("--batch", type=int, nargs="+", default=[100], help="images coded together")
    parser.add_argument("--alone", type=int, default=0, help="decode the first N images one at a time")
    parser.add_argument("--alone-batch", type=int, default=4, help="the batch of the file they are decoded from")
    args = parser.parse_args()

    resolved = build.load(args.recipe)
    pipeline = load_trained(resolved, Path(args.run))
    pixels = test_images(args.images)
    levels = resolved.recipe.data.to_levels(torch.from_numpy(pixels)[:, None])
    others = [baseline_row(name, encode, decode, pixels) for name, (encode, decode) in baselines().items()]
    nll = nll_bits(pipeline, levels)
    rows, sizes = [], []
    for batch in args.batch:
        row, size = spnkit_rows(pipeline, levels, batch, nll)
        rows.append([f"spnkit ({Path(args.recipe).stem}, batch {batch})", *row])
        sizes += [[f"batch {batch}: {cells[0]}", *cells[1:]] for cells in size]
    rows += others
    print(f"{len(pixels)} Fashion-MNIST test images; every image round-trips bit-exactly (spnkit codes with one "
          "torch thread)\n")
    print(table(["format", "set: bits/dim", "one file per image: bits/dim", "encode images/s", "decode images/s"],
                rows, ["{}", "{:.3f}", "{:.3f}", "{:.1f}", "{:.1f}"]))
    print()
    print(table(["what", "exact NLL (bits)", "coded (bits)", "excess"], sizes, ["{}"] * 4), flush=True)
    if args.alone:
        seconds = check_alone(pipeline, levels[: args.alone], args.alone_batch)
        print(f"\nthe first {args.alone} images decoded one at a time from a batch-{args.alone_batch} file: "
              f"bit-exact, {seconds:.1f} s each")


if __name__ == "__main__":
    main()
