"""Does the class label help? The quickstart and its class-conditional variant trained for the same
time on Fashion-MNIST, then scored by exact test bits/dim (conditional: given each image's label).

Steps of the two models alternate, each model's own step time is summed, and each stage stops at
its share of ``--seconds``, so both see the same machine load. The conditional model is also
scored given a wrong label per image (another class, at random), which shows how much it uses
the label. Writes a per-class sample grid of the conditional model (one row per class).

    python bench/conditional.py [--seconds 480] [--test-images 0] [--grid docs/conditional_samples.png]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from spnkit.core import build
from spnkit.data.loader import exact_batches
from spnkit.data.sources import load_split
from spnkit.engine import evaluate, run
from spnkit.engine.checkpoint import load_trained
from spnkit.engine.train import StageTrainer

RECIPES = Path(__file__).parents[1] / "recipes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=480, help="training time per model (all stages)")
    parser.add_argument("--test-images", type=int, default=0, help="0: the whole test split")
    parser.add_argument("--grid", default="conditional_samples.png", help="PNG of per-class samples")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="applied to both recipes")
    args = parser.parse_args()
    models = {label: build.load(str(RECIPES / f"{name}.toml"), ["train.steps=1000000", *args.overrides])
              for label, name in [("unconditional", "quickstart"), ("conditional", "quickstart_conditional")]}
    data = models["unconditional"].recipe.data
    shards = load_split(data, "train")
    print(f"Fashion-MNIST ({shards.origin}), {args.seconds:.0f} s of training per model, "
          f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as scratch:
        folders = {label: Path(scratch) / label for label in models}
        steps = train_for_equal_time(models, shards.shards, folders, args.seconds)
        rows = []
        for label, resolved in models.items():
            pipeline = load_trained(resolved, folders[label])
            limited = build.load(str(RECIPES / f"{resolved.recipe.name}.toml"),
                                 [f"eval.max_images={args.test_images}", *args.overrides])
            result = run.evaluation(limited, pipeline, progress=False)
            rows.append((label, sum(p.numel() for p in pipeline.parameters()), steps[label], result))
            print(f"  {label}: {evaluate.describe(result)}", flush=True)
            if label == "conditional":
                wrong = wrong_label_bits(limited, pipeline, args.test_images)
                print(f"  conditional, given a wrong label: {evaluate.describe(wrong)}", flush=True)
                rows.append(("  wrong label", rows[-1][1], steps[label], wrong))
                run.save_samples(resolved, pipeline, 8, Path(args.grid))
    print(f"\n{'model':<16}{'parameters':>12}{'steps':>8}{'test bits/dim':>15}")
    for label, count, taken, result in rows:
        print(f"{label:<16}{count:>12,}{taken:>8}{result['test_bits_per_dim']:>15.4f}")
    print(f"wrote {args.grid} (one row per class: {', '.join(load_split(data, 'test').classes or [])})")


def train_for_equal_time(models: dict[str, build.Resolved], shards: list, folders: dict[str, Path],
                         seconds: float) -> dict[str, int]:
    """Train every model for ``seconds`` of its own step time (stage by stage, an equal share
    each), their steps alternating so that all see the same machine load; save each stage's
    checkpoint into ``folders[label]/stages/NAME``. Returns each model's steps (all stages).
    The models share stage names (the first model's)."""
    first = next(iter(models.values())).recipe.stages
    steps = dict.fromkeys(models, 0)
    for name in first:
        trainers = {label: StageTrainer(resolved, name, shards, folders[label] / "stages" / name)
                    for label, resolved in models.items()}
        spent = dict.fromkeys(models, 0.0)
        share = seconds / len(first)
        while any(spent[label] < share for label in models):
            for label, trainer in trainers.items():
                if spent[label] < share:
                    started = time.perf_counter()
                    trainer.train_step()
                    spent[label] += time.perf_counter() - started
                    steps[label] += 1
        for trainer in trainers.values():
            trainer.save()
    return steps


def wrong_label_bits(resolved, pipeline, limit: int) -> dict:
    """Test bits/dim when each image is given another class's label (drawn at random)."""
    data = resolved.recipe.data
    classes = resolved.classes
    generator = torch.Generator().manual_seed(0)
    batches = exact_batches(load_split(data, "test").shards, resolved.recipe.eval.batch_size,
                            (data.channels, data.height, data.width), side=resolved.side)
    wrong = ({**batch, "labels": (batch["labels"] + torch.randint(1, classes, batch["labels"].shape,
                                                                  generator=generator)) % classes}
             for batch in batches)
    return evaluate.bits_per_dim(pipeline, wrong, resolved.recipe.data.to_levels, limit, progress=False, side="labels")


if __name__ == "__main__":
    main()
