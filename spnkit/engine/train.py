"""Training one stage: RMSProp, Polyak averaging, a piecewise-constant learning rate, gradient
clipping, atomic checkpoints and exact resume.

Every stage trains on its own, teacher-forced from the real images (its conditioning is the
image's more significant bits and given slices), so stages can be trained in any order or
in separate processes; each keeps its checkpoints in its own folder.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from spnkit.core import build
from spnkit.core.backend import Backend
from spnkit.core.system import AutoregressiveStage, Pipeline
from spnkit.data.loader import Shard, TrainingBatches, merge_states
from spnkit.engine import checkpoint
from spnkit.engine.memory import fits_in_memory
from spnkit.engine.metrics import MetricSink
from spnkit.engine.polyak import PolyakAverage
from spnkit.engine.runtime import start_backend


class StageLoss(nn.Module):
    """A stage's training loss as ``forward``, the call that DDP and FSDP wrap."""

    def __init__(self, stage: AutoregressiveStage) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, target, cond, side, uniform) -> torch.Tensor:
        return self.stage.loss(target, cond, side=side, uniform=uniform)


class StageTrainer:
    """Owns one stage's model, Polyak average, optimizer and data position, on one backend."""

    def __init__(self, resolved: build.Resolved, name: str, shards: list[Shard], folder: Path,
                 backend: Backend | None = None) -> None:
        self.resolved, self.name, self.shards, self.folder = resolved, name, shards, folder
        recipe = resolved.recipe
        self.backend = backend or start_backend(recipe.runtime, name="cpu")
        self.config, self.schedule = recipe.train, recipe.schedule
        self.seed = recipe.seed * 1000 + list(recipe.stages).index(name)
        torch.manual_seed(self.seed)
        self.backend.seed_device(self.seed)
        self.stage: AutoregressiveStage = build.build_stage(resolved, name)
        self.stage.to(self.backend.device)
        config = recipe.stages[name]
        self.view = Pipeline(resolved.quantizer(), {name: self.stage}, {name: (config.plane, config.downsample)})
        self.model = self.backend.prepare(StageLoss(self.stage))
        self.ema = PolyakAverage(self.stage, self.config.ema)  # after prepare: sharded like the stage
        optimizer = recipe.optimizer
        self.optimizer = torch.optim.RMSprop(self.stage.parameters(), lr=self.schedule.learning_rate[0],
                                             alpha=optimizer.decay, eps=optimizer.eps, momentum=optimizer.momentum)
        self.grad_clip = optimizer.grad_clip
        self.side = resolved.side
        self.batch_size = resolved.batch_size
        self.step = 0
        self.seconds = 0.0  # training time at the last checkpoint, over every session (train.seconds)
        self.clock = time.monotonic  # what measures it
        self.rng = self._current_rng()
        self.batches = self._resume()

    def _batches(self, state: dict | None) -> TrainingBatches:
        data = self.resolved.recipe.data
        streams = data.streams or self.backend.world * max(data.workers, 1)
        return TrainingBatches(self.shards, self.batch_size, data.shape, self.seed,
                               rank=self.backend.rank, world=self.backend.world, streams=streams,
                               workers=data.workers, max_bad=data.max_bad_samples, state=state, side=self.side)

    # -- checkpoints ----------------------------------------------------------------------

    def state(self) -> dict:
        """The checkpoint, on the CPU (every process must call it: it gathers the data cursors)."""
        return {
            "stage": self.name,
            "fingerprint": checkpoint.stage_fingerprint(self.resolved, self.name),
            "recipe": self.resolved.to_toml(),
            "plugins": checkpoint.plugin_versions(self.resolved),
            "model": self.backend.model_state(self.stage),
            "ema": self.backend.model_state(self.ema.averaged),
            "ema_updates": self.ema.updates,
            "optimizer": self.backend.optimizer_state(self.stage, self.optimizer),
            "step": self.step,
            "seconds": self.seconds,
            "precision": self.backend.precision,
            "data": merge_states(self.backend.gather(self.batches.state())),
            "rng": self.rng,
        }

    def _resume(self) -> TrainingBatches:
        state = checkpoint.load(self.folder, use=self._restore)  # falls back if the weights do not fit
        return self._batches(None if state is None else state["data"])

    def _restore(self, state: dict) -> None:
        if state["fingerprint"] != checkpoint.stage_fingerprint(self.resolved, self.name):
            raise checkpoint.RecipeMismatch(f"{self.folder} holds stage {self.name!r} of a different recipe; "
                                            "use another --out folder or delete it")
        self.backend.load_model_state(self.stage, state["model"])
        self.backend.load_model_state(self.ema.averaged, state["ema"])
        self.ema.updates = state["ema_updates"]
        self.backend.load_optimizer_state(self.stage, self.optimizer, state["optimizer"])
        self.step = state["step"]
        self.seconds = state.get("seconds", 0.0)  # checkpoints from before time budgets: none spent
        self.rng = state["rng"]
        trained_in = state.get("precision", self.backend.precision)  # checkpoints from before: not recorded
        if trained_in != self.backend.precision:
            warnings.warn(f"stage {self.name!r} was trained in {trained_in} up to step {self.step} and goes on in "
                          f"{self.backend.precision} (runtime.precision = {self.backend.options.precision!r} "
                          f"here); set runtime.precision to keep one")

    def save(self) -> None:
        state = self.state()
        if self.backend.is_main:
            checkpoint.save(state, self.folder)
        self.backend.barrier()

    # -- training -------------------------------------------------------------------------

    def _current_rng(self) -> dict[str, torch.Tensor]:
        """torch's CPU generator and the device's (``Backend.device_rng_state``)."""
        return {"cpu": torch.get_rng_state(), **self.backend.device_rng_state()}

    @contextlib.contextmanager
    def _own_rng(self):
        """Run with this trainer's random state (what the model draws, e.g. labels dropped for
        classifier-free training), kept apart from the global one, which data loaders also
        draw from: a resumed run then draws exactly what an uninterrupted one would."""
        outside = self._current_rng()
        torch.set_rng_state(self.rng["cpu"])
        self.backend.set_device_rng_state(self.rng)
        try:
            yield
            self.rng = self._current_rng()
        finally:
            torch.set_rng_state(outside["cpu"])
            self.backend.set_device_rng_state(outside)

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on this rank's share of a global batch (in ``train.accumulate``
        micro-batches): gradients reduced over processes, clipped, applied. Returns this rank's
        mean loss and the global gradient norm before clipping, device tensors (no host sync)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.rate(self.step)
        batch = next(self.batches)  # before _own_rng: a data loader may draw from the global state
        with self._own_rng():
            return self._step(batch)

    def _step(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        device, parts = self.backend.device, self.config.accumulate
        total = torch.zeros((), device=device)
        self.optimizer.zero_grad(set_to_none=True)
        side_all = batch.side(self.side.kind if self.side else None)
        for index in range(parts):
            images, uniform = batch.images.chunk(parts)[index], batch.uniform.chunk(parts)[index]
            levels = self.resolved.recipe.data.to_levels(images.to(device))
            target, cond = self.view.stage_inputs(self.name, self.view.quantizer.encode(levels))
            side = None if side_all is None else side_all.chunk(parts)[index].to(device)
            synced = self.backend.no_sync(self.model) if index < parts - 1 else contextlib.nullcontext()
            with synced, self.backend.autocast():
                loss = self.model(target, cond, side, uniform.to(device)) / parts
            loss.backward()
            total = total + loss.detach()
        self.backend.reduce_gradients(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.stage.parameters(), self.grad_clip)
        self.optimizer.step()
        self.ema.update(self.stage)
        self.backend.end_step()
        self.step += 1
        return total, norm

    def out_of_time(self) -> bool:
        """Whether the training time at the last checkpoint has reached ``train.seconds``."""
        return 0 < self.config.seconds <= self.seconds

    def train(self, sinks: list[MetricSink] = (), progress: bool = True, until: int | None = None) -> None:
        """Train up to ``until`` (default: ``train.steps``; none when it is 0 and ``train.seconds``
        is set) and within ``train.seconds``, checkpointing as configured: the time is counted at
        each checkpoint and kept in it, so training stops at the first checkpoint past the budget
        and a resumed run goes on counting from there. Every ``logging.every`` steps the main
        process writes the loss averaged over every process to ``sinks``."""
        if until is None:
            until = self.config.steps if self.config.steps or not self.config.seconds else None
        main = self.backend.is_main
        sinks = sinks if main else ()
        for sink in sinks:
            sink.resume(self.name, self.step)
        log_every = self.resolved.recipe.logging.every
        bar = tqdm(total=until, initial=self.step, desc=f"train {self.name} ({self.backend.precision})",
                   disable=not (progress and main), dynamic_ncols=True)
        started, images_seen = time.perf_counter(), 0
        session, before = self.clock(), self.seconds  # this session's start, the time spent before it
        while (until is None or self.step < until) and not self.out_of_time():
            with fits_in_memory(f"training stage {self.name!r}", "lower train.batch_size (or raise train.accumulate), "
                                "or narrow the stage's layers"):
                loss, norm = self.train_step()
            images_seen += self.batch_size
            if self.step % log_every == 0 or self.step == until:
                value = (self.backend.sum(loss) / self.backend.world).item()
                record = {"stage": self.name, "step": self.step, "loss": value,
                          "bits_per_dim": value / math.log(2), "lr": self.schedule.rate(self.step - 1),
                          "grad_norm": norm.item(),
                          "images_per_second": images_seen / max(time.perf_counter() - started, 1e-9)}
                bar.set_postfix(loss=f"{record['loss']:.3f}", bpd=f"{record['bits_per_dim']:.3f}",
                                img_s=f"{record['images_per_second']:.0f}")
                for sink in sinks:
                    sink.write(record)
            if self.step % self.config.checkpoint_every == 0 or self.step == until:
                # every process stops at the same checkpoint: they agree on the slowest one's time
                self.seconds = max(self.backend.gather(before + self.clock() - session))
                self.save()
            bar.update(1)
        bar.close()
