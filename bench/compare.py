"""Decoders compared on Fashion-MNIST at (about) equal parameter count and equal CPU time.

Each single-stage model (a decoder over the whole 28x28 8-bit image, raster order) and the
quickstart's two-stage SPN train for the same wall-clock budget on this machine, with the
quickstart's optimiser settings, then are scored exactly on the embedded test images.
Widths are chosen so that parameter counts match the SPN's. Needs spnkit-pixelrnn installed
for the PixelRNN rows (they are skipped, with a note, otherwise).

    python bench/compare.py [--seconds 120] [--test-images 500]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from spnkit.core import build, plugins
from spnkit.data.loader import exact_batches
from spnkit.data.sources import load_split
from spnkit.engine import evaluate
from spnkit.engine.train import StageTrainer
from spnkit.core.system import Pipeline

RECIPE = Path(__file__).parents[1] / "recipes" / "quickstart.toml"
SINGLE_STAGE = ["quantizer={plugin='depth_split', splits=[8]}",
                "stages={main={plane=0, ordering={plugin='raster'}, decoder={plugin='pixelcnn'}}}"]
# decoder -> (width option, a table template with {width})
DECODERS = {
    "pixelcnn": "{{plugin='pixelcnn', layers=6, channels={w}, head_channels={w}}}",
    "gated_pixelcnn": "{{plugin='gated_pixelcnn', layers=6, channels={w}, residual_channels={w}}}",
    "row_lstm": "{{plugin='row_lstm', layers=2, features={w}}}",
    "diagonal_bilstm": "{{plugin='diagonal_bilstm', layers=2, features={w}}}",
}
WIDTHS = range(8, 257, 4)


def parameters(resolved: build.Resolved) -> int:
    with torch.device("meta"):
        return sum(p.numel() for name in resolved.recipe.stages for p in build.build_stage(resolved, name).parameters())


def matched(decoder: str, target: int, common: list[str]) -> build.Resolved:
    """The single-stage recipe whose decoder width brings its parameter count closest to ``target``."""
    best = None
    for width in WIDTHS:
        resolved = build.load(str(RECIPE), [*common, *SINGLE_STAGE,
                                            f"stages.main.decoder={DECODERS[decoder].format(w=width)}"])
        gap = abs(parameters(resolved) - target)
        if best is None or gap < best[0]:
            best = (gap, resolved)
    return best[1]


def train_for(resolved: build.Resolved, seconds: float, shards, folder: Path) -> tuple[Pipeline, int]:
    """Train every stage for an equal share of ``seconds``; the Polyak-averaged pipeline and steps."""
    pipeline = build.build_pipeline(resolved)
    steps = 0
    share = seconds / len(resolved.recipe.stages)
    for name in resolved.recipe.stages:
        trainer = StageTrainer(resolved, name, shards, folder / name)
        started = time.perf_counter()
        while time.perf_counter() - started < share:
            trainer.train_step()
            steps += 1
        pipeline.stages[name].load_state_dict(trainer.ema.module.state_dict())
    return pipeline.eval(), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120, help="training budget per model")
    parser.add_argument("--test-images", type=int, default=500)
    args = parser.parse_args()
    common = ["data.source='fashion_mnist_embedded'", "train.steps=1000000"]
    spn = build.load(str(RECIPE), common)
    target = parameters(spn)
    registry = plugins.default_registry()
    train = load_split(spn.recipe.data, "train").shards
    test = load_split(spn.recipe.data, "test").shards
    rows = []
    candidates = [("spn (quickstart, 2 stages)", spn)]
    for decoder in DECODERS:
        if decoder not in registry.names("decoder"):
            print(f"skipping {decoder}: not installed (pip install -e plugins/spnkit-pixelrnn)")
            continue
        candidates.append((decoder, matched(decoder, target, common)))
    print(f"Fashion-MNIST (embedded), {args.seconds:.0f} s of training each, "
          f"test bits/dim on {args.test_images} images, {torch.get_num_threads()} threads")
    with TemporaryDirectory() as scratch:
        for label, resolved in candidates:
            pipeline, steps = train_for(resolved, args.seconds, train, Path(scratch) / label.split()[0])
            result = evaluate.bits_per_dim(pipeline, exact_batches(test, 100, (1, 28, 28)),
                                           resolved.recipe.data.to_levels, args.test_images, progress=False)
            rows.append((label, parameters(resolved), steps, result["test_bits_per_dim"]))
            print(f"  {label:<28}{rows[-1][1]:>10,} parameters{steps:>7} steps{rows[-1][3]:>9.4f} bits/dim",
                  flush=True)
    print(f"\n{'model':<28}{'parameters':>12}{'steps':>8}{'test bits/dim':>15}")
    for label, count, steps, bpd in sorted(rows, key=lambda r: r[3]):
        print(f"{label:<28}{count:>12,}{steps:>8}{bpd:>15.4f}")


if __name__ == "__main__":
    main()
