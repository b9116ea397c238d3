"""Training one stage: RMSProp, Polyak averaging, a piecewise-constant learning rate, gradient
clipping, atomic checkpoints and exact resume.

Every stage trains on its own, teacher-forced from the real images (its conditioning is the
image's more significant bits and given slices), so stages can be trained in any order or
in separate processes; each keeps its checkpoints in its own folder.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from spnkit.core import build, plugins
from spnkit.data.loader import Shard, TrainingBatches, merge_states
from spnkit.engine import checkpoint, settings
from spnkit.core.backend import Backend, BackendOptions
from spnkit.core.plugins import Registry
from spnkit.core.recipe import RecipeError, TrainConfig
from spnkit.core.system import AutoregressiveStage, Pipeline


AUTO_ORDER = ("xla", "cuda", "cpu")


class RecipeMismatch(Exception):
    """A checkpoint was trained from a different recipe for this stage."""


def learning_rate(config: TrainConfig, step: int) -> float:
    """Piecewise constant: ``learning_rate[k]`` from ``lr_milestones[k-1]`` on."""
    passed = sum(step >= milestone for milestone in config.lr_milestones)
    return config.learning_rate[min(passed, len(config.learning_rate) - 1)]


def label_classes(resolved: build.Resolved) -> int | None:
    """How many classes the recipe's conditional stages take labels of (None: they take
    vectors, or nothing)."""
    side = resolved.side()
    return side[1] if side is not None and side[0] == "labels" else None


def stage_fingerprint(resolved: build.Resolved, name: str) -> str:
    """What a stage's weights depend on: its table, the data's shape and the quantizer."""
    raw = resolved.to_dict()
    return json.dumps({"stage": raw["stages"][name], "quantizer": raw["quantizer"],
                       "data": {k: raw["data"][k] for k in ("height", "width", "channels", "bits")}}, sort_keys=True)


class PolyakAverage(nn.Module):
    """An exponential moving average of a model's parameters (Polyak averaging, the paper's
    0.9999): ``module`` holds the average; its state dict reads like ``AveragedModel``'s.
    Updated with plain in-place arithmetic, without host syncs (safe on XLA)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.decay = decay
        self.register_buffer("n_averaged", torch.zeros((), dtype=torch.long, device=next(model.parameters()).device))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for average, current in zip(self.module.parameters(), model.parameters()):
            average.mul_(self.decay).add_(current.detach(), alpha=1 - self.decay)
        self.n_averaged.add_(1)


class StageLoss(nn.Module):
    """A stage's training loss as ``forward``, the call that DDP and FSDP wrap."""

    def __init__(self, stage: AutoregressiveStage) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, target, cond, side, uniform) -> torch.Tensor:
        return self.stage.loss(target, cond, side=side, uniform=uniform)


def start_backend(resolved: build.Resolved, registry: Registry | None = None, name: str | None = None) -> Backend:
    """The recipe's backend (``train.backend``, or ``name``), started: the process has joined its run."""
    registry = registry or plugins.default_registry()
    train = resolved.recipe.train
    wanted = name or train.backend
    if wanted == "auto":
        names = registry.names("backend")
        wanted = next((n for n in AUTO_ORDER if n in names and registry.get("backend", n).cls.available()), "cpu")
    if wanted not in registry.names("backend"):
        raise RecipeError([f"train.backend: unknown backend {wanted!r}; installed: {', '.join(registry.names('backend'))}"])
    cls = registry.get("backend", wanted).cls
    if not cls.available():
        raise RecipeError([f"train.backend: {wanted!r} is not available on this machine"])
    backend = cls(BackendOptions(train.precision, train.compile, train.parallel))
    backend.start()
    return backend


class StageTrainer:
    """Owns one stage's model, Polyak average, optimizer and data position, on one backend."""

    def __init__(self, resolved: build.Resolved, name: str, shards: list[Shard], folder: Path,
                 backend: Backend | None = None) -> None:
        self.resolved, self.name, self.shards, self.folder = resolved, name, shards, folder
        recipe = resolved.recipe
        settings.check(recipe)
        self.backend = backend or start_backend(resolved, name="cpu")
        self.config = recipe.train
        self.seed = recipe.seed * 1000 + list(recipe.stages).index(name)
        torch.manual_seed(self.seed)
        device = self.backend.device
        self.stage: AutoregressiveStage = build.build_stage(resolved, name)
        self.stage.to(device)
        config = recipe.stages[name]
        self.view = Pipeline(resolved.quantizer(), {name: self.stage}, {name: (config.plane, config.downsample)})
        self.model = self.backend.prepare(StageLoss(self.stage))
        self.ema = PolyakAverage(self.stage, self.config.ema)  # after prepare: sharded like the stage
        self.optimizer = torch.optim.RMSprop(self.stage.parameters(), lr=self.config.learning_rate[0],
                                             alpha=self.config.decay, eps=self.config.eps,
                                             momentum=self.config.momentum)
        self.side = resolved.side()  # ("labels", classes), ("vectors", K) or None
        self.batch_size = settings.batch_size(recipe)
        self.step = 0
        self.batches = self._resume()

    def _batches(self, state: dict | None) -> TrainingBatches:
        data = self.resolved.recipe.data
        streams = data.streams or self.backend.world * max(data.workers, 1)
        return TrainingBatches(self.shards, self.batch_size, (data.channels, data.height, data.width), self.seed,
                               rank=self.backend.rank, world=self.backend.world, streams=streams,
                               workers=data.workers, max_bad=data.max_bad_samples, state=state, side=self.side)

    # -- checkpoints ----------------------------------------------------------------------

    def state(self) -> dict:
        """The checkpoint, on the CPU (every process must call it: it gathers the data cursors)."""
        return {
            "stage": self.name,
            "fingerprint": stage_fingerprint(self.resolved, self.name),
            "recipe": self.resolved.to_toml(),
            "plugins": plugin_versions(self.resolved),
            "model": self.backend.model_state(self.stage),
            "ema": self.backend.model_state(self.ema),
            "optimizer": self.backend.optimizer_state(self.stage, self.optimizer),
            "step": self.step,
            "data": merge_states(self.backend.gather(self.batches.state())),
            "torch_rng": torch.get_rng_state(),
        }

    def _resume(self) -> TrainingBatches:
        state = checkpoint.load(self.folder)
        if state is None:
            return self._batches(None)
        if state["fingerprint"] != stage_fingerprint(self.resolved, self.name):
            raise RecipeMismatch(f"{self.folder} holds stage {self.name!r} of a different recipe; "
                                 "use another --out folder or delete it")
        self.backend.load_model_state(self.stage, state["model"])
        self.backend.load_model_state(self.ema, state["ema"])
        self.backend.load_optimizer_state(self.stage, self.optimizer, state["optimizer"])
        self.step = state["step"]
        torch.set_rng_state(state["torch_rng"])
        return self._batches(state["data"])

    def save(self) -> None:
        state = self.state()
        if self.backend.is_main:
            checkpoint.save(state, self.folder)
        self.backend.barrier()

    # -- training -------------------------------------------------------------------------

    def train_step(self) -> torch.Tensor:
        """One optimizer step on this rank's share of a global batch (in ``train.accumulate``
        micro-batches); returns this rank's mean loss, a device tensor (no host sync)."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.step)
        batch = next(self.batches)
        device, parts = self.backend.device, self.config.accumulate
        total = torch.zeros((), device=device)
        self.optimizer.zero_grad(set_to_none=True)
        side_all = batch.side(self.side[0] if self.side else None)
        for index in range(parts):
            images, uniform = batch.images.chunk(parts)[index], batch.uniform.chunk(parts)[index]
            target, cond = self.view.stage_inputs(self.name, self.view.quantizer.encode(images.to(device).long()))
            side = None if side_all is None else side_all.chunk(parts)[index].to(device)
            synced = self.backend.no_sync(self.model) if index < parts - 1 else contextlib.nullcontext()
            with synced, self.backend.autocast():
                loss = self.model(target, cond, side, uniform.to(device)) / parts
            loss.backward()
            total = total + loss.detach()
        torch.nn.utils.clip_grad_norm_(self.stage.parameters(), self.config.grad_clip)
        self.backend.optimizer_step(self.optimizer)
        self.ema.update(self.stage)
        self.backend.end_step()
        self.step += 1
        return total

    def train(self, metrics: Path | None = None, progress: bool = True, until: int | None = None) -> None:
        """Train up to ``until`` (default: ``train.steps``), checkpointing as configured; the
        main process logs the loss averaged over every process."""
        until = self.config.steps if until is None else until
        main = self.backend.is_main
        if metrics is not None and main:
            trim_metrics(metrics, self.name, self.step)
        bar = tqdm(total=until, initial=self.step, desc=f"train {self.name}", disable=not (progress and main),
                   dynamic_ncols=True)
        started, images_seen = time.perf_counter(), 0
        writer = _tensorboard(metrics.parent / "tensorboard" if metrics and main else None)
        while self.step < until:
            loss = self.train_step()
            images_seen += self.batch_size
            if self.step % self.config.log_every == 0 or self.step == until:
                value = (self.backend.sum(loss) / self.backend.world).item()
                record = {"stage": self.name, "step": self.step, "loss": value,
                          "bits_per_dim": value / math.log(2), "lr": learning_rate(self.config, self.step - 1),
                          "images_per_second": images_seen / max(time.perf_counter() - started, 1e-9)}
                bar.set_postfix(loss=f"{record['loss']:.3f}", bpd=f"{record['bits_per_dim']:.3f}",
                                img_s=f"{record['images_per_second']:.0f}")
                if metrics is not None and main:
                    with metrics.open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
                if writer is not None:
                    writer.add_scalar(f"{self.name}/bits_per_dim", record["bits_per_dim"], self.step)
            if self.step % self.config.checkpoint_every == 0 or self.step == until:
                self.save()
            bar.update(1)
        bar.close()
        if writer is not None:
            writer.close()


def trim_metrics(path: Path, stage: str, step: int) -> None:
    """Drop ``stage``'s records after ``step`` (written before a crash, beyond the checkpoint
    a run resumes from), so a resumed run's metrics read like an uninterrupted run's."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a crash
            continue
        if record.get("stage") != stage or record.get("step", 0) <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept != lines:
        temporary = path.with_suffix(".jsonl.tmp")
        temporary.write_text("".join(kept))
        os.replace(temporary, path)


def _tensorboard(folder: Path | None):
    """A TensorBoard writer when tensorboard is installed, else None."""
    if folder is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


def plugin_versions(resolved: build.Resolved) -> dict[str, str]:
    return {f"{c.entry.kind}:{c.entry.name}": f"{c.entry.provider.distribution} {c.entry.provider.version}"
            for c in resolved.components.values()}


def load_trained(resolved: build.Resolved, out: Path) -> Pipeline:
    """The pipeline with every stage's Polyak-averaged weights from ``out/stages/NAME``."""
    pipeline = build.build_pipeline(resolved)
    for name, stage in pipeline.stages.items():
        state = checkpoint.load(out / "stages" / name)
        if state is None:
            raise FileNotFoundError(f"no checkpoint for stage {name!r} in {out / 'stages' / name}; train it first")
        if state["fingerprint"] != stage_fingerprint(resolved, name):
            raise RecipeMismatch(f"{out / 'stages' / name} holds stage {name!r} of a different recipe")
        averaged = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
        stage.load_state_dict(averaged)
    return pipeline.eval()
