"""Training and exact-evaluation throughput of a recipe's stages, in images/s, optionally against
another checkout of spnkit and with ``torch.compile``, all timed in one process, interleaved
(ratios, not figures taken at different moments of a shared machine).

    python bench/throughput.py [RECIPE] [KEY=VALUE ...] [--gated] [--baseline DIR] [--compile] [--bf16]
                               [--threads N] [--clock wall|cpu] [--rounds 5] [--steps 4] [--device cuda]

RECIPE defaults to recipes/quickstart.toml. ``--gated`` replaces its stages with one raster
stage: a gated PixelCNN of 6 layers x 64 channels (128 residual channels) over 8-bit 28x28x1
images, trained at batch 16, timed beside ``bench/textbook_gated.py`` (the same network as
public PyTorch versions write it, from its level embedding to its 256 logits; with ``--bf16``
also under autocast). ``--baseline DIR``: the spnkit of another checkout (e.g. ``git
worktree add /tmp/before HEAD~1``) builds the same stages from the same seed. ``--compile``
adds each version with its training loss compiled (as ``runtime.compile``; on 2 CPU threads,
compiled and eager code timed in one process slowed each other several-fold here, so compare
them at ``--threads 1``); ``--bf16`` each version trained under bf16 autocast (as
``runtime.precision``). Each round times ``--steps`` training steps of every version in turn,
then one evaluation batch of each. Training is a full step (loss, backward, RMSProp);
evaluation is ``log_prob`` of an ``eval.batch_size`` batch, every slice of every image (in
fp32, not compiled, as ``spnkit eval`` runs). Figures are medians over rounds; ratios, to the
first version listed, medians of the per-round ratios (``bench/memory.py`` measures memory).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch

RECIPE = Path(__file__).parents[1] / "recipes" / "quickstart.toml"
GATED = ["quantizer={plugin='depth_split', splits=[8]}", "train.batch_size=16",
         "stages={main={plane=0, ordering={plugin='raster'}, decoder={plugin='gated_pixelcnn', layers=6, "
         "channels=64, residual_channels=128}}}"]


@contextlib.contextmanager
def spnkit_of(checkout: Path | None):
    """``spnkit.core.build`` of ``checkout`` (None: this process's spnkit). Another checkout's
    modules stand in for ours in ``sys.modules`` only inside the block; what it builds there
    keeps its own code (spnkit imports nothing lazily on these paths), so two versions run
    side by side in one process."""
    if checkout is None:
        yield importlib.import_module("spnkit.core.build")
        return
    ours = {name: module for name, module in sys.modules.items() if name == "spnkit" or name.startswith("spnkit.")}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(checkout))
    try:
        build = importlib.import_module("spnkit.core.build")
        if not Path(build.__file__).resolve().is_relative_to(checkout.resolve()):
            raise SystemExit(f"--baseline {checkout}: no spnkit package there")
        yield build
    finally:
        sys.path.remove(str(checkout))
        for name in [name for name in sys.modules if name == "spnkit" or name.startswith("spnkit.")]:
            del sys.modules[name]
        sys.modules.update(ours)


def training_step(model: torch.nn.Module, loss_of, device: str, bf16: bool):
    """One full training step of ``model`` as a function: ``loss_of()`` (under bf16 autocast if
    asked), backward, RMSProp (the paper's optimizer, spnkit's default)."""
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.95, momentum=0.9, eps=1e-8)

    def step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


class Subject:
    """One version's pipeline, with a training step and an evaluation batch per stage."""

    def __init__(self, checkout: Path | None, compiled: bool, bf16: bool, recipe: str, overrides: list[str],
                 args) -> None:
        self.label = f"{'baseline' if checkout else 'this'}{' compiled' if compiled else ''}{' bf16' if bf16 else ''}"
        self.compiled, self.bf16 = compiled, bf16
        with spnkit_of(checkout) as build:
            resolved = build.load(recipe, overrides)
            torch.manual_seed(0)
            self.pipeline = build.build_pipeline(resolved).to(args.device)
        data = resolved.recipe.data
        self.shape, self.bits = (data.channels, data.height, data.width), data.bits
        self.batch, self.eval_batch = args.batch or resolved.recipe.train.batch_size, resolved.recipe.eval.batch_size
        self.args = args
        self.steps = {name: self._train_step(name) for name in self.pipeline.stages}

    def parameter_count(self, name: str | None) -> int:
        return sum(p.numel() for p in (self.pipeline.stages[name] if name else self.pipeline).parameters())

    def images(self, batch: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 2**self.bits, (batch, *self.shape), generator=g).to(self.args.device)

    def _train_step(self, name: str):
        stage = self.pipeline.stages[name]
        stage.train()
        generator = torch.Generator(device=self.args.device).manual_seed(0)
        target, cond = self.pipeline.stage_inputs(name, self.pipeline.quantizer.encode(self.images(self.batch, 1)))
        loss_of = torch.compile(stage.loss) if self.compiled else stage.loss
        return training_step(stage, lambda: loss_of(target, cond, generator), self.args.device, self.bf16)

    @torch.no_grad()
    def evaluate(self, name: str | None) -> None:
        """``log_prob`` of one evaluation batch by stage ``name`` (None: the whole pipeline)."""
        self.pipeline.eval()
        x = self.images(self.eval_batch, 2)
        if name is None:
            self.pipeline.log_prob(x)
        else:
            planes = self.pipeline.quantizer.encode(x)
            self.pipeline.stages[name].log_prob(*self.pipeline.stage_inputs(name, planes))
        self.pipeline.train()


class Textbook:
    """``bench/textbook_gated.py`` in the place of the ``--gated`` stage: its training step as
    ``Subject``'s (RMSProp, same batch) and its evaluation (the NLL of a batch)."""

    def __init__(self, bf16: bool, stage: str, subject: Subject) -> None:
        from textbook_gated import TextbookGatedPixelCNN

        self.label, self.compiled, self.bf16 = f"textbook{' bf16' if bf16 else ''}", False, bf16
        torch.manual_seed(0)
        self.model = TextbookGatedPixelCNN(layers=6, features=64, skip=128).to(subject.args.device)
        train_images, self.eval_images = subject.images(subject.batch, 1), subject.images(subject.eval_batch, 2)
        step = training_step(self.model, lambda: self.model.loss(train_images), subject.args.device, bf16)
        self.stage, self.steps = stage, {stage: step}

    def parameter_count(self, name: str | None) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.no_grad()
    def evaluate(self, name: str | None) -> None:
        self.model.eval()
        self.model.loss(self.eval_images)
        self.model.train()


def seconds(function, device: str, clock=time.perf_counter) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    started = clock()
    function()
    if device == "cuda":
        torch.cuda.synchronize()
    return clock() - started


def interleaved(jobs: list, rounds: int, device: str, clock=time.perf_counter) -> list[list[float]]:
    """Seconds of each job in each round, the jobs taking turns within a round (after one warm-up call each)."""
    for job in jobs:
        job()
    times = [[] for _ in jobs]
    for _ in range(rounds):
        for job, record in zip(jobs, times):
            record.append(seconds(job, device, clock))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(RECIPE))
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--gated", action="store_true", help="one raster stage: a 6x64 gated PixelCNN, batch 16")
    parser.add_argument("--baseline", type=Path, help="a checkout of spnkit to time against, interleaved")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="training steps per round")
    parser.add_argument("--batch", type=int, help="training batch (default: the recipe's train.batch_size)")
    parser.add_argument("--compile", action="store_true", help="also each version with its training loss compiled")
    parser.add_argument("--bf16", action="store_true", help="also each version trained under bf16 autocast")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time, steadier on a shared machine (use with --threads 1)")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [*args.overrides, *(GATED if args.gated else [])]
    versions = [*([args.baseline] if args.baseline else []), None]
    variants = [(False, False)] + [(True, False)] * args.compile + [(False, True)] * args.bf16
    subjects = [Subject(checkout, compiled, bf16, args.recipe, overrides, args)
                for compiled, bf16 in variants for checkout in versions]
    first = subjects[0]
    if args.gated:
        stage = next(iter(first.pipeline.stages))
        subjects = [Textbook(bf16, stage, first) for compiled, bf16 in variants if not compiled] + subjects
    print(f"{args.recipe}{' --gated' if args.gated else ''} on {args.device} ({torch.get_num_threads()} threads), "
          f"training batch {first.batch}, {args.rounds} rounds of {args.steps} steps; "
          f"evaluation batch {first.eval_batch}; ratios to '{subjects[0].label}' (the system's to '{first.label}')")
    print(f"{'':<8}{'version':<18}{'params':>10}{'train img/s':>13}{'ratio':>7}{'eval img/s':>12}{'ratio':>7}")
    for name in [*first.pipeline.stages, None]:
        train = [None] * len(subjects)
        if name is not None:
            train = interleaved([lambda s=s: [s.steps[name]() for _ in range(args.steps)] for s in subjects],
                                args.rounds, args.device, clock)
        evaluated = [s for s in subjects if not (s.compiled or s.bf16) and (name or isinstance(s, Subject))]
        evaluation = interleaved([lambda s=s: s.evaluate(name) for s in evaluated], args.rounds, args.device, clock)
        evaluation = [evaluation[evaluated.index(s)] if s in evaluated else None for s in subjects]
        for index, subject in enumerate(subjects):
            if train[index] is None and evaluation[index] is None:
                continue
            params = subject.parameter_count(name)
            row = f"{name or 'system':<8}{subject.label:<18}{params:>10,}"
            for times, images, width in ((train, first.batch * args.steps, 13), (evaluation, first.eval_batch, 12)):
                if times[index] is None:
                    row += f"{'-':>{width}}{'':>7}"
                    continue
                reference = next(t for t in times if t is not None)
                ratio = statistics.median(before / after for after, before in zip(times[index], reference))
                row += f"{images / statistics.median(times[index]):>{width}.1f}{ratio:>6.2f}x"
            print(row, flush=True)


if __name__ == "__main__":
    main()
