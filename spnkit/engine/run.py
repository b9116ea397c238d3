"""The main job: train every stage (resuming), evaluate exactly, sample, and write the results.

Output folder layout::

    OUT/stages/NAME/checkpoint.pt   (and checkpoint.prev.pt)
    OUT/metrics.jsonl   OUT/curves.png   OUT/samples.png   OUT/summary.json
    OUT/recipe.toml   OUT/plugins.json   (written when training starts: see run_record)
    OUT/tensorboard/   OUT/wandb/   OUT/wandb-id   (the metric sinks asked for: see metrics)
    OUT/.spnkit.lock    (held by the one spnkit process using the folder)

The folder is checked (a folder, writable) before any work and claimed for the whole job
(``out_folder``); a failure to write an output is one ``OutputError`` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from spnkit.core import build
from spnkit.core.backend import Backend
from spnkit.core.recipe import RecipeError
from spnkit.core.system import Pipeline
from spnkit.data.loader import SkipLog, exact_batches
from spnkit.data.sources import Split, load_split
from spnkit.engine import evaluate, images, plots
from spnkit.engine.checkpoint import load_trained
from spnkit.engine.memory import fits_in_memory
from spnkit.engine.metrics import MetricSink, open_sinks
from spnkit.engine.out_folder import claim_for_all, prepare, writing
from spnkit.engine.run_record import write_run_record
from spnkit.engine.runtime import start_backend
from spnkit.engine.sampling_bar import sampling_bar
from spnkit.engine.train import StageTrainer


def default_folder(resolved: build.Resolved, recipe_path: str) -> Path:
    return Path("runs") / (resolved.recipe.name or Path(recipe_path).stem)


def train(resolved: build.Resolved, out: Path, stages: list[str] | None = None, progress: bool = True,
          backend: Backend | None = None, split: Split | None = None, trained: dict | None = None,
          sinks: list[MetricSink] | None = None) -> str:
    """Train the named stages (default: all, in order) on ``backend`` (default: the recipe's)
    from the training split (``split``, default: read it); returns where the data came from.
    ``trained``, if given, gets ``{stage: (steps, seconds)}``: how far each stage trained.
    Records go to ``sinks`` (default: the recipe's, opened and closed here)."""
    backend = backend or start_backend(resolved.recipe.runtime)
    split = load_split(resolved.recipe.data, "train") if split is None else split
    prepare(out)
    with claim_for_all(out, "train", backend):
        if backend.is_main:
            write_run_record(resolved, out)
        opened = metric_sinks(resolved, out, backend) if sinks is None else contextlib.nullcontext(sinks)
        with opened as sinks:
            for name in stages or list(resolved.recipe.stages):
                trainer = StageTrainer(resolved, name, split.shards, out / "stages" / name, backend)
                trainer.train(sinks, progress=progress)
                if trained is not None:
                    trained[name] = trainer.step, trainer.seconds
    return split.origin


@contextlib.contextmanager
def metric_sinks(resolved: build.Resolved, out: Path, backend: Backend) -> Iterator[list[MetricSink]]:
    """The recipe's metric sinks writing into ``out`` on the main process (none on the others),
    each failure to write one ``OutputError``; closed at the end of the block."""
    sinks = []
    if backend.is_main:
        with writing(out):
            sinks = [_Guarded(sink, getattr(sink, "path", out)) for sink in open_sinks(out, resolved)]
    try:
        yield sinks
    finally:
        for sink in sinks:
            sink.close()


class _Guarded:
    """A metric sink whose failures to write (a full disk) are one ``OutputError`` naming ``path``."""

    def __init__(self, sink: MetricSink, path: Path) -> None:
        self.sink, self.path = sink, path

    def resume(self, stage: str, step: int) -> None:
        with writing(self.path):
            self.sink.resume(stage, step)

    def write(self, record: dict) -> None:
        with writing(self.path):
            self.sink.write(record)

    def evaluation(self, result: dict, step: int, samples: np.ndarray | None) -> None:
        with writing(self.path):
            self.sink.evaluation(result, step, samples)

    def close(self) -> None:
        with writing(self.path):
            self.sink.close()


def evaluation(resolved: build.Resolved, pipeline: Pipeline, progress: bool = True,
               backend: Backend | None = None, split: Split | None = None) -> dict:
    """Exact bits/dim on the test split (``split``, default: read it; the first
    ``eval.max_images`` when set); with several processes each reads its share and the sums
    are added up. A class-conditional system that learned ``p(x)`` too (``learned_no_label``)
    is also scored without its labels: ``no_label`` holds that figure and its stages'. A system
    with stages given the code of their own input reports ``evaluate.GIVEN_CODE`` instead of
    ``test_bits_per_dim`` (see ``evaluate.given_code``)."""
    data = resolved.recipe.data
    split = split or load_split(data, "test")
    skips = SkipLog(data.max_bad_samples)
    side = resolved.side
    rank, world = (backend.rank, backend.world) if backend else (0, 1)
    if world > 1 and resolved.recipe.eval.max_images:
        raise RecipeError(["eval.max_images: evaluate the whole test split when running several processes"])

    def score(no_labels: bool, skips: SkipLog) -> dict:
        batches = exact_batches(split.shards, resolved.recipe.eval.batch_size, data.shape,
                                rank=rank, world=world, workers=data.workers, skips=skips, side=side)
        with fits_in_memory("evaluation", "lower eval.batch_size"):
            return evaluate.bits_per_dim(pipeline, batches, data.to_levels, resolved.recipe.eval.max_images,
                                         split.samples, progress and rank == 0, side=side.kind if side else None,
                                         backend=backend, origin=split.origin, no_labels=no_labels)

    result = score(False, skips)
    if learned_no_label(resolved):
        unlabelled = score(True, SkipLog(data.max_bad_samples))
        result["no_label"] = {key: unlabelled[key] for key in ("test_bits_per_dim", "stages")}
    result = {**result, "test_data": split.origin, "conditional": side is not None, "skipped": skips.records()}
    return evaluate.given_code(result, resolved.encoded) if resolved.encoded else result


def learned_no_label(resolved: build.Resolved) -> bool:
    """Whether the system takes labels and every conditional stage learned ``p(x)`` beside
    ``p(x | label)``: a "no label" row (``null_class``) that training dropped labels to
    (``drop_labels > 0``)."""
    options = [plan.conditioner.options for plan in resolved.stages.values() if plan.conditioner is not None]
    return resolved.classes is not None and all(
        getattr(o, "null_class", False) and getattr(o, "drop_labels", 0) > 0 for o in options)


def sample(resolved: build.Resolved, pipeline: Pipeline, count: int, temperature: float | None = None,
           complete: np.ndarray | None = None, seed: int | None = None, keep: str = "top",
           reference: bool = False, labels: list[int] | None = None, test: Split | None = None,
           progress: bool = False, guidance: float | None = None) -> np.ndarray:
    """``count`` images ``[N, C, H, W]`` uint8 through the whole chain; ``complete`` (an image
    ``[C, H, W]``) keeps what ``keep`` says (see ``Pipeline.completion_masks``), samples the rest.
    For class-conditional recipes, ``labels`` gives ``count`` images of each class in turn
    (default: every class; ``N = count * len(labels)``); vector-conditioned recipes take the
    vectors of the first ``count`` images of the test split (``test``, default: read it), and
    recipes whose stages encode their input the codes of those images.
    ``progress``: a bar over the subpixels drawn, with images/s at the end. ``guidance`` ``W``:
    classifier-free guidance with weight ``W`` (see ``AutoregressiveStage.sample``)."""
    side = None
    if resolved.classes is not None:
        labels = list(range(resolved.classes)) if labels is None else labels
        side = torch.tensor(labels).repeat_interleave(count)
        count = len(side)
    elif resolved.side is not None:
        side = test_vectors(resolved, count, test or load_split(resolved.recipe.data, "test"))
    elif resolved.encoded:
        found = test_images(resolved, count, test or load_split(resolved.recipe.data, "test"))
        device = next(pipeline.parameters()).device
        with torch.no_grad():
            side = pipeline.encode(resolved.recipe.data.to_levels(found).to(device))
    recipe = resolved.recipe
    data = recipe.data
    temperatures = {name: stage.temperature if temperature is None else temperature
                    for name, stage in recipe.stages.items()}
    generator = torch.Generator().manual_seed(recipe.seed if seed is None else seed)
    shape = (data.channels, data.height, data.width)
    known = masks = None
    if complete is not None:
        known = data.to_levels(torch.from_numpy(complete)).expand(count, -1, -1, -1)
        masks = [m.expand(count, -1, -1, -1) for m in pipeline.completion_masks(keep, shape)]
    with fits_in_memory(f"sampling {count} images", "sample fewer at once (--count, sample.count)"), \
            sampling_bar(pipeline, count, enabled=progress):
        drawn = pipeline.sample(count, shape, temperatures=temperatures, generator=generator, reference=reference,
                                known=known, masks=masks, side=side, guidance=guidance)
    return data.to_pixels(drawn).numpy()


def test_vectors(resolved: build.Resolved, count: int, test: Split) -> torch.Tensor:
    """The side vectors ``[count, K]`` of the first ``count`` images of the ``test`` split."""
    return _first_test(resolved, count, test, "vectors")


def test_images(resolved: build.Resolved, count: int, test: Split) -> torch.Tensor:
    """The first ``count`` images ``[count, C, H, W]`` uint8 of the ``test`` split."""
    return _first_test(resolved, count, test, "images")


def _first_test(resolved: build.Resolved, count: int, test: Split, key: str) -> torch.Tensor:
    found = []
    for batch in exact_batches(test.shards, count, resolved.recipe.data.shape, side=resolved.side):
        found.append(batch[key][batch["valid"]])
        if sum(len(v) for v in found) >= count:
            break
    taken = torch.cat(found)[:count]
    if len(taken) < count:
        raise RecipeError([f"sample.count: {count} samples need the {key} of {count} test images; "
                           f"the test split has {len(taken)}"])
    return taken


def save_samples(resolved: build.Resolved, pipeline: Pipeline, count: int, path: Path,
                 labels: list[int] | None = None, **options) -> np.ndarray:
    """A PNG grid of samples: for class-conditional recipes one row of ``count`` per class
    (``labels``, default every class), named on its left, else ``count`` images in a square grid.
    Returns the picture ``[H, W, C]`` uint8."""
    drawn = sample(resolved, pipeline, count, labels=labels, **options)
    names = None
    if resolved.classes is not None:  # each row's class by name
        known = (options.get("test") or load_split(resolved.recipe.data, "test")).classes or []
        names = ["no label" if label == -1 else known[label] if label < len(known) else f"class {label}"
                 for label in (range(resolved.classes) if labels is None else labels)]
    with writing(path):
        return images.save_grid(drawn, path, columns=count if resolved.classes is not None else None,
                                row_names=names)


def evaluated_weights(ema: float, steps: int | dict[str, int]) -> dict:
    """What ``summary.json`` says of the weights it scored: the Polyak average (its decay, the
    warm-up and how many updates it saw), or the raw weights when ``ema = 0``."""
    if not ema:
        return {"kind": "raw", "updates": steps}
    return {"kind": "polyak average", "decay": ema, "warm_up": "min(decay, (1 + n) / (10 + n)) at update n",
            "updates": steps}


def run(resolved: build.Resolved, out: Path, progress: bool = True, backend: Backend | None = None) -> dict:
    """Train, evaluate, sample; the main process writes summary.json, samples.png and curves.png
    into ``out``, which it holds for the whole job."""
    started = time.perf_counter()
    backend = backend or start_backend(resolved.recipe.runtime)
    data = resolved.recipe.data
    split, test = load_split(data, "train"), load_split(data, "test")
    prepare(out)
    with claim_for_all(out, "run", backend), metric_sinks(resolved, out, backend) as sinks:
        trained = {}
        origin = train(resolved, out, progress=progress, backend=backend, split=split, trained=trained, sinks=sinks)
        pipeline = load_trained(resolved, out).to(backend.device)
        result = evaluation(resolved, pipeline, progress, backend, test)
        config = resolved.recipe.train
        steps = {name: done for name, (done, _) in trained.items()}
        if config.seconds:  # a time budget: stages stop at different steps
            budget = {"steps": steps, "train_seconds": {name: round(t, 1) for name, (_, t) in trained.items()}}
        else:
            budget = {"steps": config.steps}
        summary = {
            **result,
            "weights": evaluated_weights(config.ema, steps if config.seconds else config.steps),
            "train_data": origin,
            **budget,
            "images_seen": {name: done * resolved.batch_size for name, done in steps.items()},
            "parameters": {name: sum(p.numel() for p in stage.parameters())
                           for name, stage in pipeline.stages.items()},
            "processes": backend.world,
            "precision": backend.precision,  # what runtime.precision ("auto": per device) trained in
            "seconds": round(time.perf_counter() - started, 1),
        }
        if backend.is_main:
            count = resolved.recipe.sample.count
            if resolved.classes is not None:
                count = max(1, count // resolved.classes)  # a row per class
            grid = save_samples(resolved, pipeline.cpu(), count, out / "samples.png", test=test, progress=progress)
            modelled = {name: stage.modelled_dims for name, stage in pipeline.stages.items()}
            own = plots.bits_per_subpixel(result["stages"], math.prod(data.shape), modelled)
            figures = {**result, "test_bits_per_subpixel": own}
            for sink in sinks:
                sink.evaluation(figures, max(steps.values(), default=0), grid)
            metrics = out / "metrics.jsonl"
            with writing(metrics, "read"):
                lines = metrics.read_text().splitlines() if metrics.exists() else []
            records = [json.loads(line) for line in lines if line.strip()]
            with writing(out / "curves.png"):
                plots.plot_curves(records, out / "curves.png")
            with writing(out / "summary.json"):
                (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        backend.barrier()
    return summary
