"""Is the loader ever the bottleneck? Images per second that the shard loader delivers against
images per second that a CPU training step consumes, at 64x64 and 256x256, measured in one run.

The training side is the matching paper recipe (imagenet64 / celebahq256) with the quickstart's
model widths, one stage. Its batch is the recipe's (512 / 256) for the loader; a CPU training
step at that batch needs more than 24 GiB (the slice embedder's one-hot input), so the step is
timed at ``--train-batch`` images and reported per image (a CPU step's cost per image does not
fall with batch size; the table shows two batch sizes to check). The loader side reads freshly written shards of
photo-like images (smooth colour fields plus noise) through the same ``TrainingBatches`` that
training uses, with ``--workers`` worker processes.

    python bench/loader.py [--workers 2] [--steps 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spnkit.core import build
from spnkit.data.loader import TrainingBatches
from spnkit.data.sources import load_split
from spnkit.data.writer import Geometry, write_shards
from spnkit.core.recipe import DataConfig

RECIPES = Path(__file__).parents[1] / "recipes"
ENCODER = ("{plugin='slice_embedder', conv_layers=2, channels=32, attention_layers=1, heads=4, "
           "attention_channels=32, residual_blocks=1, residual_channels=64}")
DECODER = ("{plugin='hybrid', transformer={layers=1, heads=4, channels=32}, "
           "pixelcnn={layers=4, channels=32, residual_channels=64}}")
CASES = [("imagenet64.toml", "main", 64), ("celebahq256.toml", "low", 256)]


def photos(folder: Path, count: int, size: int, seed: int = 0) -> None:
    """``count`` RGB PNGs: a smooth random colour field plus pixel noise (about as hard to
    decode as photographs)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for index in range(count):
        coarse = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.int16)
        noisy = np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{index:05d}.png")


def loader_rate(folder: Path, size: int, batch: int, workers: int, batches: int) -> float:
    """Images per second of ``batches`` training batches, after the first."""
    config = DataConfig(source="shards", height=size, width=size, channels=3, train=str(folder / "train-*.tar"))
    stream = TrainingBatches(load_split(config, "train").shards, batch, (3, size, size), seed=0, workers=workers)
    next(stream)
    started = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * batch / (time.perf_counter() - started)


def training_rate(recipe: str, stage: str, steps: int, batch: int) -> float:
    """Images per second of training steps of ``stage`` at quickstart widths and ``batch``."""
    resolved = build.load(str(RECIPES / recipe), [f"stages.{stage}.encoder={ENCODER}",
                                                  f"stages.{stage}.decoder={DECODER}"])
    recipe_ = resolved.recipe
    pipeline = build.build_pipeline(resolved)
    model = pipeline.stages[stage]
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.95, momentum=0.9, eps=1e-8)
    x = torch.randint(0, 256, (batch, recipe_.data.channels, recipe_.data.height, recipe_.data.width))
    target, cond = pipeline.stage_inputs(stage, pipeline.quantizer.encode(x))
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        loss = model.loss(target, cond, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per size")
    parser.add_argument("--train-batch", type=int, default=32, help="batch of the timed training steps")
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, loader workers {args.workers}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for recipe, stage, size in CASES:
            batch = build.load(str(RECIPES / recipe)).recipe.train.batch_size
            consumed = {b: training_rate(recipe, stage, args.steps, b) for b in (args.train_batch // 2, args.train_batch)}
            images = Path(scratch) / f"photos{size}"
            photos(images, 2 * batch + 64, size)
            shards = Path(scratch) / f"shards{size}"
            write_shards([images], shards, Geometry(None), split="train", shard_size=64, progress=False)
            delivered = loader_rate(shards, size, batch, args.workers, batches=max(2, 1024 // batch))
            rows.append((f"{size}x{size}", recipe, batch, delivered, consumed))
            print(f"  {size}x{size}: loader {delivered:,.0f} img/s at batch {batch}; training "
                  + ", ".join(f"{rate:,.1f} img/s at batch {b}" for b, rate in consumed.items()), flush=True)
    print(f"\n{'size':<9}{'recipe':<18}{'loader img/s':>14}{'training img/s':>16}{'loader / training':>19}")
    for size, recipe, batch, delivered, consumed in rows:
        fastest = max(consumed.values())
        print(f"{size:<9}{recipe:<18}{delivered:>14,.0f}{fastest:>16,.1f}{delivered / fastest:>18.1f}x")


if __name__ == "__main__":
    main()
