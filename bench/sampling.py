"""Sampling speed, measured in one run: the cached fast path against the reference path (one
full forward pass per subpixel) and against one forward pass of the log-likelihood of the same
batch, for every built-in decoder and for SPN stages; then a whole SPN system at size.

Each time is the least of ``--repeats`` runs, the fast path and the forward pass interleaved,
so that other load on the machine shows in the ratios as little as it can. ``--clock cpu``
counts this process's CPU time instead of wall time: steadier on a shared machine, and the
wall time of an idle one when a single thread runs (use it with ``--threads 1``).

The reference path's cost per subpixel is one forward pass, the same for every subpixel, so
by default it is timed over the first ``--reference-subpixels`` subpixels and scaled to the
slice (``--full-reference`` times all of them). Peak memory (CUDA only:
``max_memory_allocated`` during the fast path) is shown as ``-`` on the CPU.

At size: the quickstart recipe's two-stage system, at its widths (random weights), sampling
one 64x64, 128x128 and 256x256 image with S = 2, 4, 8 (32x32 slices).

    python bench/sampling.py [--batch 8] [--threads N] [--clock wall|cpu] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from spnkit.builtin.embedder import SliceEmbedder, SliceEmbedderOptions
from spnkit.builtin.orderings import RasterOrdering, SubscaleOptions, SubscaleOrdering
from spnkit.builtin.pixelcnn import PixelCNN, PixelCNNOptions
from spnkit.builtin.transformer import Hybrid, HybridOptions, MaskedTransformer, MaskedTransformerOptions
from spnkit.core import build
from spnkit.core.interfaces import EncoderSpec, NoOptions, SliceSpec, one_hot
from spnkit.core.sampling import draw, gumbel_noise
from spnkit.core.system import AutoregressiveStage
from spnkit.nn.gated import GatedPixelCNN, GatedPixelCNNOptions

ATTENTION = MaskedTransformerOptions(layers=2, heads=4, channels=64)
GATED = GatedPixelCNNOptions(layers=6, filter_size=3, channels=64, residual_channels=128)
DECODERS = {
    "pixelcnn": lambda spec: PixelCNN(PixelCNNOptions(layers=6, channels=64, head_channels=128), spec),
    "gated_pixelcnn": lambda spec: GatedPixelCNN(GATED, spec),
    "masked_transformer": lambda spec: MaskedTransformer(ATTENTION, spec),
    "hybrid": lambda spec: Hybrid(HybridOptions(ATTENTION, GATED), spec),
}
SHAPES = [(1, 28, 28), (3, 32, 32)]
HEADER = (f"{'':<24}{'shape':>10}{'reference s':>13}{'fast s':>9}{'forward s':>11}{'ref/fast':>10}"
          f"{'fast/fwd':>10}{'peak MiB':>10}")


class Clock:
    """Seconds of a call on the chosen clock, waiting for CUDA work to finish."""

    def __init__(self, kind: str, device: str) -> None:
        self.now = time.process_time if kind == "cpu" else time.perf_counter
        self.device = device

    def __call__(self, function) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
        started = self.now()
        function()
        if self.device == "cuda":
            torch.cuda.synchronize()
        return self.now() - started


@torch.no_grad()
def reference_seconds(decoder, noise, context, subpixels: int | None, clock: Clock) -> float:
    """Seconds of the reference path over the slice (timed on ``subpixels``, scaled)."""
    spec = decoder.spec
    total = spec.channels * spec.height * spec.width
    if subpixels is None or subpixels >= total:
        return clock(lambda: decoder.sample_reference(noise, context=context))
    x = torch.zeros(noise.shape[0], spec.channels, spec.height, spec.width, dtype=torch.long, device=noise.device)

    def some_subpixels() -> None:
        for k in range(subpixels):
            row, rest = divmod(k, spec.width * spec.channels)
            col, channel = divmod(rest, spec.channels)
            logits = decoder(one_hot(x, spec.levels, noise.dtype), context)
            x[:, channel, row, col] = draw(logits[:, :, channel, row, col], noise[:, :, channel, row, col])

    return clock(some_subpixels) * total / subpixels


@torch.no_grad()
def fast_and_forward(sample, forward, repeats: int, clock: Clock) -> tuple[float, float, str]:
    """The least seconds of ``sample()`` and of ``forward()`` over ``repeats`` interleaved runs,
    and the fast path's peak memory in MiB (CUDA) or ``-``."""
    forward()  # warm up
    fast, once = [], []
    if clock.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        once.append(clock(forward))
        fast.append(clock(sample))
    peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if clock.device == "cuda" else "-"
    return min(fast), min(once), peak


def as_stage(decoder) -> AutoregressiveStage:
    """``decoder`` as a stage over whole images in raster order, whose ``log_prob`` is one forward pass."""
    spec = decoder.spec
    return AutoregressiveStage(RasterOrdering(NoOptions()), decoder, None, (spec.channels, spec.height, spec.width),
                               spec.levels)


def row(name: str, shape: str, reference: float, fast: float, forward: float, peak: str) -> str:
    return (f"{name:<24}{shape:>10}{reference:>13.1f}{fast:>9.2f}{forward:>11.3f}{reference / fast:>10.0f}"
            f"{fast / forward:>10.1f}{peak:>10}")


def spn_stage(channels: int, size: int) -> AutoregressiveStage:
    """A small full SPN stage: S = 2, slice embedder, hybrid decoder, 3-bit levels."""
    ordering = SubscaleOrdering(SubscaleOptions(2))
    h = size // 2
    encoder = SliceEmbedder(SliceEmbedderOptions(channels=64, attention_channels=64),
                            EncoderSpec(channels, h, h, 8, (2, 2)))
    decoder = Hybrid(HybridOptions(ATTENTION, GATED), SliceSpec(channels, h, h, 8, encoder.out_channels))
    return AutoregressiveStage(ordering, decoder, encoder, (channels, size, size), 8)


def quickstart(size: int = 28, factor: int = 2):
    """The quickstart recipe's pipeline (its widths, random weights) for ``size``-square images."""
    overrides = [f"data.height={size}", f"data.width={size}"]
    overrides += [f"stages.{name}.ordering.factor={factor}" for name in ("low", "high")]
    torch.manual_seed(0)
    return build.build_pipeline(build.load("recipes/quickstart.toml", overrides)).eval()


def stage_inputs(stage: AutoregressiveStage, batch: int, device: str):
    """Random levels of the stage's plane ``[B, C, H, W]`` and of its conditioning plane (or None)."""
    shape = (batch, stage.channels, stage.height, stage.width)
    target = torch.randint(0, stage.levels, shape, device=device)
    cond = torch.randint(0, stage.cond_levels, shape, device=device) if stage.cond_levels else None
    return target, cond


def stage_rows(named_stages, batch: int, subpixels: int | None, repeats: int, clock: Clock) -> None:
    """Fast path, reference (the decoder's, per modelled slice) and one ``log_prob`` of whole stages."""
    for name, stage in named_stages:
        target, cond = stage_inputs(stage, batch, clock.device)
        decoder, (c, h, w) = stage.decoder, (stage.channels, stage.slice_height, stage.slice_width)
        generator = torch.Generator().manual_seed(0)
        fast, forward, peak = fast_and_forward(lambda: stage.sample(batch, cond=cond, generator=generator),
                                               lambda: stage.log_prob(target, cond), repeats, clock)
        noise = gumbel_noise((batch, stage.levels, c, h, w), torch.Generator().manual_seed(0), device=clock.device)
        context = torch.randn(batch, decoder.spec.context_channels, h, w, device=clock.device)
        slices = stage.num_slices - stage.given_slices
        reference = reference_seconds(decoder, noise, context, subpixels, clock) * slices
        print(row(name, f"{stage.height}x{stage.width}x{c}", reference, fast, forward, peak))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--levels", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-subpixels", type=int, default=96)
    parser.add_argument("--full-reference", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, batch = args.device, args.batch
    clock = Clock(args.clock, device)
    subpixels = None if args.full_reference else args.reference_subpixels
    print(f"sampling on {device}, {args.threads} thread(s), {args.clock} clock, batch {batch}, {args.levels} levels; "
          f"least of {args.repeats} runs; reference "
          + ("timed in full" if subpixels is None else f"timed on {subpixels} subpixels and scaled"))
    print(HEADER)
    for name, make in DECODERS.items():
        for shape in SHAPES:
            torch.manual_seed(0)
            decoder = make(SliceSpec(*shape, args.levels)).to(device).eval()
            noise = gumbel_noise((batch, args.levels, *shape), torch.Generator().manual_seed(0), device=device)
            levels = torch.randint(0, args.levels, (batch, *shape), device=device)
            whole = as_stage(decoder)
            fast, forward, peak = fast_and_forward(lambda: decoder.sample(noise), lambda: whole.log_prob(levels),
                                                   args.repeats, clock)
            reference = reference_seconds(decoder, noise, None, subpixels, clock)
            print(row(name, "x".join(map(str, (shape[1], shape[2], shape[0]))), reference, fast, forward, peak))

    print("\nSPN stages, fast path against the decoder's reference path on every modelled slice and one log_prob;")
    print("spn: S = 2, slice embedder + hybrid, 8 levels; quickstart: the recipe's stages (random weights)")
    print(HEADER)
    small = []
    for channels, size in [(1, 28), (3, 32)]:
        torch.manual_seed(0)
        small.append(("spn stage", spn_stage(channels, size).to(device).eval()))
    stage_rows(small, batch, subpixels, args.repeats, clock)
    stage_rows([(f"quickstart {name}", stage) for name, stage in quickstart().to(device).stages.items()],
               batch, subpixels, args.repeats, clock)

    print("\nfast path cost against the number of subpixels (gated_pixelcnn, 3 channels):")
    previous = None
    for size in (8, 16, 32):
        torch.manual_seed(0)
        decoder = DECODERS["gated_pixelcnn"](SliceSpec(3, size, size, args.levels)).to(device).eval()
        noise = gumbel_noise((batch, args.levels, 3, size, size), torch.Generator().manual_seed(0), device=device)
        with torch.no_grad():
            seconds = min(clock(lambda: decoder.sample(noise)) for _ in range(args.repeats))
        growth = "" if previous is None else f"  (x{seconds / previous:.2f} for x4 subpixels)"
        per_subpixel = seconds / (3 * size * size) * 1e3
        print(f"  {size:>2}x{size}x3: {seconds:7.2f} s, {per_subpixel:.3f} ms per subpixel{growth}")
        previous = seconds

    print("\nat size: the quickstart system (two stages, its widths), sampling one image")
    print(f"{'image':>10}{'S':>4}{'slices':>8}{'s per image':>13}{'us per pixel':>14}{'per pixel vs 64x64':>20}")
    first = None
    for size, factor in [(64, 2), (128, 4), (256, 8)]:
        pipeline = quickstart(size, factor).to(device)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            seconds = min(clock(lambda: pipeline.sample(1, (1, size, size), generator=generator))
                          for _ in range(args.repeats))
        per_pixel = seconds / size**2
        first = first or per_pixel
        print(f"{f'{size}x{size}':>10}{factor:>4}{factor**2:>8}{seconds:>13.2f}{per_pixel * 1e6:>14.1f}"
              f"{per_pixel / first:>20.2f}")


if __name__ == "__main__":
    main()
