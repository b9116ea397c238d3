"""PixelCNN Auto-Encoders against their bottleneck: ``recipes/fashion_autoencoder.toml`` with
codes of m = 2, 8 and 32 floats, and the same gated PixelCNN without a code, trained for the
same CPU time on Fashion-MNIST, then scored exactly on the test split.

The auto-encoders' figure is bits/dim given the code, ``-log p(x | code(x))``: not a likelihood
of ``x`` (the code is computed from ``x``), so it sits in its own column beside the unconditional
model's test bits/dim. Steps of the models alternate and each model's own step time is summed
(``train_for_equal_time`` of ``bench/conditional.py``), so all see the same machine load.
Writes a plot of the figure against m, each auto-encoder's reconstructions (a row per test
image: the image, then samples given its code) and an interpolation strip of the m = 8 model
between two test images' codes (rows: samples, each column with the same noise).

On a CPU shared with other work, one thread per process (``--threads 1``, the default) trains
several times faster than two threads waiting for each other.

    python bench/autoencoder.py [--seconds 600] [--threads 1] [--test-images 0] [--docs docs]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from conditional import train_for_equal_time
from spnkit.core import build, recipe
from spnkit.data.sources import load_split
from spnkit.engine import autoencoder, evaluate, images, run
from spnkit.engine.checkpoint import load_trained

RECIPE = Path(__file__).parents[1] / "recipes" / "fashion_autoencoder.toml"
BOTTLENECKS = (2, 8, 32)
SHOWN = (0, 2, 1, 3, 5, 8)  # test images shown in the reconstructions (of different classes)
ENDS = (0, 1)  # the interpolation's two test images


def models(overrides: list[str]) -> dict[str, build.Resolved]:
    """``m=2``, ``m=8``, ``m=32`` and ``unconditional``: the recipe with each bottleneck, and without
    its conditioner; a time budget only (``train.steps = 0``)."""
    raw = tomllib.loads(RECIPE.read_text())
    raw["train"]["steps"] = 0
    chosen = {}
    for m in BOTTLENECKS:
        variant = copy.deepcopy(raw)
        variant["stages"]["main"]["conditioner"]["bottleneck"] = m
        chosen[f"m={m}"] = variant
    plain = copy.deepcopy(raw)
    del plain["stages"]["main"]["conditioner"]
    chosen["unconditional"] = plain
    return {label: build.validate(recipe.apply_overrides(variant, overrides))
            for label, variant in chosen.items()}


def plot(figures: dict[int, float], unconditional: float, path: Path, seconds: float) -> None:
    """Bits/dim given the code against m (log scale), the unconditional model's as a line."""
    figure = Figure(figsize=(5, 3.4), dpi=120)
    axes = figure.add_subplot()
    ms = sorted(figures)
    axes.plot(ms, [figures[m] for m in ms], "o-", color="tab:blue", label="auto-encoder: bits/dim given the code")
    for m in ms:
        axes.annotate(f"{figures[m]:.3f}", (m, figures[m]), textcoords="offset points", xytext=(0, 6),
                      ha="center", fontsize=8)
    axes.axhline(unconditional, color="grey", linestyle="--", label=f"unconditional: {unconditional:.3f} bits/dim")
    axes.margins(x=0.1, y=0.2)  # room for the figures written above the points
    axes.set_xscale("log", base=2)
    axes.set_xticks(ms, [str(m) for m in ms])
    axes.set_xlabel("bottleneck m (floats in the code)")
    axes.set_ylabel("test bits/dim")
    axes.set_title(f"Fashion-MNIST, {seconds:.0f} s of CPU training each", fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600, help="training time per model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--test-images", type=int, default=0, help="0: the whole test split")
    parser.add_argument("--samples", type=int, default=6, help="samples per image in the reconstructions")
    parser.add_argument("--docs", default="docs", help="folder for the pictures")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="applied to every model")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = models(args.overrides)
    data = chosen["unconditional"].recipe.data
    split = load_split(data, "train")
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    print(f"Fashion-MNIST ({split.origin}), {args.seconds:.0f} s of training per model, "
          f"{torch.get_num_threads()} threads", flush=True)
    test = load_split(data, "test")
    shown = run.test_images(chosen["unconditional"], max(SHOWN) + 1, test)
    rows, given_code = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        folders = {label: Path(scratch) / label for label in chosen}
        steps = train_for_equal_time(chosen, split.shards, folders, args.seconds)
        for label, resolved in chosen.items():
            pipeline = load_trained(resolved, folders[label])
            limited = build.validate(recipe.apply_overrides(resolved.to_dict(),
                                                                  [f"eval.max_images={args.test_images}"]))
            result = run.evaluation(limited, pipeline, progress=False)
            print(f"  {label}: {evaluate.describe(result)}", flush=True)
            rows.append((label, sum(p.numel() for p in pipeline.parameters()), steps[label], result))
            if label == "unconditional":
                continue
            m = int(label.split("=")[1])
            given_code[m] = result[evaluate.GIVEN_CODE]
            levels = data.to_levels(shown[list(SHOWN)])
            grid = autoencoder.reconstructions(resolved, pipeline, levels, args.samples, seed=0)
            images.save_grid(grid, docs / f"autoencoder_reconstructions_m{m}.png", columns=args.samples + 1)
            if m == 8:
                ends = data.to_levels(shown[list(ENDS)])
                with torch.no_grad():
                    codes = pipeline.encode(ends)
                a = {name: code[:1] for name, code in codes.items()}
                b = {name: code[1:] for name, code in codes.items()}
                strip = autoencoder.interpolation(resolved, pipeline, a, b, steps=8, rows=3, seed=0)
                # each row: image A, 8 samples along the line, image B
                pixels = data.to_pixels(ends).numpy()
                framed = [np.concatenate([pixels[:1], strip[8 * r:8 * r + 8], pixels[1:]]) for r in range(3)]
                images.save_grid(np.concatenate(framed), docs / "autoencoder_interpolation.png", columns=10)
    unconditional = next(r[3]["test_bits_per_dim"] for r in rows if r[0] == "unconditional")
    plot(given_code, unconditional, docs / "autoencoder_bits.png", args.seconds)
    print(f"\n| model | parameters | steps | bits/dim given the code | test bits/dim |")
    print("|---|---|---|---|---|")
    for label, count, taken, result in rows:
        if evaluate.GIVEN_CODE in result:
            print(f"| {label} | {count:,} | {taken} | {result[evaluate.GIVEN_CODE]:.4f} | - |")
        else:
            print(f"| {label} | {count:,} | {taken} | - | {result['test_bits_per_dim']:.4f} |")
    print(f"wrote {docs}/autoencoder_bits.png, autoencoder_reconstructions_m*.png, autoencoder_interpolation.png")


if __name__ == "__main__":
    main()
