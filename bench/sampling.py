"""Sampling speed: the cached fast path against the reference path (one full forward pass per
subpixel), for every built-in decoder and a small full SPN stage, measured in one run.

The reference path's cost per subpixel is one forward pass of the whole slice, the same for
every subpixel, so by default it is timed over the first ``--reference-subpixels`` subpixels
and scaled to the slice (``--full-reference`` times all of them). The fast path is always
timed in full. Peak memory (CUDA only: ``max_memory_allocated`` during the fast path) is
shown as ``-`` on the CPU, where the process's peak RSS is set by the reference runs.

    python bench/sampling.py [--batch 8] [--device cpu] [--full-reference]
"""

from __future__ import annotations

import argparse
import time

import torch

from spnkit.builtin.embedder import SliceEmbedder, SliceEmbedderOptions
from spnkit.builtin.orderings import SubscaleOptions, SubscaleOrdering
from spnkit.builtin.pixelcnn import PixelCNN, PixelCNNOptions
from spnkit.nn.gated import GatedPixelCNN, GatedPixelCNNOptions
from spnkit.builtin.transformer import Hybrid, HybridOptions, MaskedTransformer, MaskedTransformerOptions
from spnkit.core.interfaces import EncoderSpec, SliceSpec, one_hot
from spnkit.core.sampling import draw, gumbel_noise
from spnkit.core.system import AutoregressiveStage

ATTENTION = MaskedTransformerOptions(layers=2, heads=4, channels=64)
GATED = GatedPixelCNNOptions(layers=6, filter_size=3, channels=64, residual_channels=128)
DECODERS = {
    "pixelcnn": lambda spec: PixelCNN(PixelCNNOptions(layers=6, channels=64, head_channels=128), spec),
    "gated_pixelcnn": lambda spec: GatedPixelCNN(GATED, spec),
    "masked_transformer": lambda spec: MaskedTransformer(ATTENTION, spec),
    "hybrid": lambda spec: Hybrid(HybridOptions(ATTENTION, GATED), spec),
}
SHAPES = [(1, 28, 28), (3, 32, 32)]


def timed(function, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


@torch.no_grad()
def reference_seconds(decoder, noise, context, subpixels: int | None, device: str) -> float:
    """Seconds of the reference path over the slice (timed on ``subpixels``, scaled)."""
    spec = decoder.spec
    total = spec.channels * spec.height * spec.width
    if subpixels is None or subpixels >= total:
        return timed(lambda: decoder.sample_reference(noise, context=context), device)
    x = torch.zeros(noise.shape[0], spec.channels, spec.height, spec.width, dtype=torch.long, device=noise.device)

    def some_subpixels() -> None:
        for k in range(subpixels):
            row, rest = divmod(k, spec.width * spec.channels)
            col, channel = divmod(rest, spec.channels)
            logits = decoder(one_hot(x, spec.levels, noise.dtype), context)
            x[:, channel, row, col] = draw(logits[:, :, channel, row, col], noise[:, :, channel, row, col])

    return timed(some_subpixels, device) * total / subpixels


@torch.no_grad()
def fast_seconds(decoder, noise, context, device: str) -> tuple[float, str]:
    """Seconds of the fast path and its peak memory in MiB (CUDA) or ``-``."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(lambda: decoder.sample(noise, context=context), device)
    peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if device == "cuda" else "-"
    return seconds, peak


def spn_stage(channels: int, size: int) -> AutoregressiveStage:
    """A small full SPN stage: S = 2, slice embedder, hybrid decoder, 3-bit levels."""
    ordering = SubscaleOrdering(SubscaleOptions(2))
    h = size // 2
    encoder = SliceEmbedder(SliceEmbedderOptions(channels=64, attention_channels=64),
                            EncoderSpec(channels, h, h, 8, (2, 2)))
    decoder = Hybrid(HybridOptions(ATTENTION, GATED), SliceSpec(channels, h, h, 8, encoder.out_channels))
    return AutoregressiveStage(ordering, decoder, encoder, (channels, size, size), 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--levels", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reference-subpixels", type=int, default=96)
    parser.add_argument("--full-reference", action="store_true")
    args = parser.parse_args()
    device, batch = args.device, args.batch
    subpixels = None if args.full_reference else args.reference_subpixels
    print(f"sampling on {device}, batch {batch}, {args.levels} levels; reference "
          + ("timed in full" if subpixels is None else f"timed on {subpixels} subpixels and scaled"))
    print(f"{'decoder':<20}{'shape':>10}{'reference s':>13}{'fast s':>9}{'ratio':>8}{'fast img/s':>12}{'peak MiB':>10}")
    for name, make in DECODERS.items():
        for shape in SHAPES:
            torch.manual_seed(0)
            spec = SliceSpec(*shape, args.levels)
            decoder = make(spec).to(device).eval()
            noise = gumbel_noise((batch, args.levels, *shape), torch.Generator().manual_seed(0), device=device)
            reference = reference_seconds(decoder, noise, None, subpixels, device)
            fast, peak = fast_seconds(decoder, noise, None, device)
            label = "x".join(map(str, (shape[1], shape[2], shape[0])))
            print(f"{name:<20}{label:>10}{reference:>13.1f}{fast:>9.2f}{reference / fast:>8.1f}"
                  f"{batch / fast:>12.2f}{peak:>10}")

    print("\nfull SPN stage (S = 2, slice embedder + hybrid, 8 levels): fast vs reference")
    for channels, size in [(1, 28), (3, 32)]:
        torch.manual_seed(0)
        stage = spn_stage(channels, size).to(device).eval()
        generator = torch.Generator().manual_seed(0)
        fast = timed(lambda: stage.sample(batch, generator=generator), device)
        decoder = stage.decoder
        noise = gumbel_noise((batch, 8, channels, size // 2, size // 2), torch.Generator().manual_seed(0), device=device)
        context = torch.randn(batch, decoder.spec.context_channels, size // 2, size // 2, device=device)
        reference = reference_seconds(decoder, noise, context, subpixels, device) * stage.num_slices
        print(f"{'spn stage':<20}{f'{size}x{size}x{channels}':>10}{reference:>13.1f}{fast:>9.2f}"
              f"{reference / fast:>8.1f}{batch / fast:>12.2f}{'':>10}")

    print("\nfast path cost against the number of subpixels (gated_pixelcnn, 3 channels):")
    previous = None
    for size in (8, 16, 32):
        torch.manual_seed(0)
        decoder = DECODERS["gated_pixelcnn"](SliceSpec(3, size, size, args.levels)).to(device).eval()
        noise = gumbel_noise((batch, args.levels, 3, size, size), torch.Generator().manual_seed(0), device=device)
        seconds, _ = fast_seconds(decoder, noise, None, device)
        per = seconds / (3 * size * size) * 1e3
        growth = "" if previous is None else f"  (x{seconds / previous:.2f} for x4 subpixels)"
        print(f"  {size:>2}x{size}x3: {seconds:7.2f} s, {per:.3f} ms per subpixel{growth}")
        previous = seconds


if __name__ == "__main__":
    main()
