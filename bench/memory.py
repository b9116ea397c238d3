"""Peak memory of one training step: SPN stage (32x32 slices) vs a decoder over the full image.

The paper's claim: an SPN's memory is set by the slice size, so it stays flat as the image
grows (S = size / 32), while a decoder over the full image grows with the pixel count (up to
S^2 more). Each configuration runs in a fresh subprocess; on CPU the figure is the growth of
peak RSS over the step, on CUDA ``torch.cuda.max_memory_allocated``.

    python bench/memory.py [--device cuda] [--levels 8] [--channels 96] [--layers 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

from spnkit.builtin.embedder import SliceEmbedder, SliceEmbedderOptions
from spnkit.builtin.orderings import RasterOrdering, SubscaleOptions, SubscaleOrdering
from spnkit.nn.gated import GatedPixelCNN, GatedPixelCNNOptions
from spnkit.core.interfaces import EncoderSpec, NoOptions, SliceSpec
from spnkit.core.system import AutoregressiveStage

SIZES = (64, 128, 256)
SLICE = 32


def build(kind: str, size: int, levels: int, width: int, layers: int) -> AutoregressiveStage:
    decoder_options = GatedPixelCNNOptions(layers=layers, channels=width, residual_channels=2 * width)
    if kind == "full":
        ordering = RasterOrdering(NoOptions())
        decoder = GatedPixelCNN(decoder_options, SliceSpec(3, size, size, levels))
        return AutoregressiveStage(ordering, decoder, None, (3, size, size), levels)
    factor = size // SLICE
    ordering = SubscaleOrdering(SubscaleOptions(factor))
    encoder = SliceEmbedder(
        SliceEmbedderOptions(conv_layers=2, channels=width, attention_layers=1, attention_channels=width,
                             residual_blocks=1, residual_channels=2 * width),
        EncoderSpec(3, SLICE, SLICE, levels, (factor, factor)),
    )
    decoder = GatedPixelCNN(decoder_options, SliceSpec(3, SLICE, SLICE, levels, encoder.out_channels))
    return AutoregressiveStage(ordering, decoder, encoder, (3, size, size), levels)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(kind: str, size: int, levels: int, width: int, layers: int, batch: int, device: str) -> dict:
    """One training step (forward, backward) in this process; returns its peak memory."""
    torch.manual_seed(0)
    stage = build(kind, size, levels, width, layers).to(device)
    x = torch.randint(0, levels, (batch, 3, size, size), device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    if device == "cuda":
        stage.loss(x, generator=generator).backward()  # warm-up: lazy init, cuDNN plans
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        stage.loss(x, generator=generator).backward()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:  # the high-water mark of RSS: no warm-up, it would set the mark already
        base = peak_rss_bytes()
        stage.loss(x, generator=generator).backward()
        peak = max(peak_rss_bytes() - base, 0)
    return {"kind": kind, "size": size, "peak_bytes": peak,
            "parameters": sum(p.numel() for p in stage.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--levels", type=int, default=8, help="levels per subpixel (8: a 3-bit stage)")
    parser.add_argument("--channels", type=int, default=96, help="conv channels of both models (a multiple of 3)")
    parser.add_argument("--layers", type=int, default=8, help="gated PixelCNN layers of both models")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--one", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.levels, args.channels, args.layers, args.batch, args.device)))
        return
    rows = []
    for kind in ("spn", "full"):
        for size in SIZES:
            command = [sys.executable, __file__, "--one", kind, str(size), "--device", args.device,
                       "--levels", str(args.levels), "--channels", str(args.channels), "--layers", str(args.layers),
                       "--batch", str(args.batch)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{kind} at {size}: {done.stderr.strip().splitlines()[-1]}")
            rows.append(json.loads(done.stdout))
    print(f"peak memory of one training step on {args.device} (batch {args.batch}, {args.levels} levels, "
          f"gated PixelCNN {args.layers} layers x {args.channels} channels)")
    print(f"{'model':<28}{'image':>9}{'peak MiB':>11}{'x at 64':>9}{'params':>11}")
    for kind, label in (("spn", "SPN stage, 32x32 slices"), ("full", "decoder over the full image")):
        own = [r for r in rows if r["kind"] == kind]
        for row in own:
            ratio = row["peak_bytes"] / max(own[0]["peak_bytes"], 1)
            print(f"{label:<28}{row['size']:>6}^2 {row['peak_bytes'] / 2**20:>10.1f}{ratio:>9.2f}{row['parameters']:>11,}")
    spn = {r["size"]: r["peak_bytes"] for r in rows if r["kind"] == "spn"}
    full = {r["size"]: r["peak_bytes"] for r in rows if r["kind"] == "full"}
    print(f"SPN growth 64 -> 256: {spn[256] / spn[64]:.2f}x (goal <= 1.5x); "
          f"full-image decoder growth: {full[256] / full[64]:.2f}x (pixels grow 16x); "
          f"full / SPN at 256: {full[256] / spn[256]:.1f}x")


if __name__ == "__main__":
    main()
