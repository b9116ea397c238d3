"""The ``Backend`` interface: where a training loop runs and how its processes cooperate.

A backend is a plugin (hook ``spnkit_register_backends``), chosen by ``runtime.backend`` or
``--backend`` (``auto``: the first available of xla, cuda, cpu). The training loop is the same
for all; it asks the backend for a device, a wrapped model (DDP, FSDP, ...), an autocast
context, gradients reduced over processes and cross-process sums. Model and decoder code never
sees one.
"""

from __future__ import annotations

import abc
import contextlib
from typing import ClassVar

import attrs
import torch
from torch import nn

from spnkit.core.validators import one_of


@attrs.frozen
class RuntimeConfig:
    """The recipe's ``[runtime]`` section: which backend runs training, and how."""

    backend: str = attrs.field(default="auto",
                             metadata={"doc": "a backend plugin: cpu, cuda, xla, ... (auto: xla, then cuda, then cpu)"})
    precision: str = attrs.field(default="auto", validator=one_of(("auto", "fp32", "bf16")),
                               metadata={"doc": "training steps under bf16 autocast (weights, optimizer and "
                                                "evaluation stay fp32); auto: bf16 where the device multiplies "
                                                "bfloat16 natively (CPUs with AMX, CUDA GPUs from Ampere on)"})
    compile: bool = attrs.field(default=False, metadata={"doc": "torch.compile the stage"})
    parallel: str = attrs.field(default="ddp", validator=one_of(("ddp", "fsdp")),
                              metadata={"doc": "with several processes: ddp (replicas) or fsdp (sharded parameters)"})


class Backend(abc.ABC):
    """One process's view of a (possibly multi-process) run."""

    Options: ClassVar[type] = RuntimeConfig
    rank: int = 0
    world: int = 1

    def __init__(self, options: RuntimeConfig) -> None:
        self.options = options

    @classmethod
    @abc.abstractmethod
    def available(cls) -> bool:
        """Whether this machine can run the backend (without side effects)."""

    @abc.abstractmethod
    def start(self) -> None:
        """Join the run's processes (when launched as several) and set ``rank`` and ``world``."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Where this process's model and batches live."""

    def prepare(self, model: nn.Module) -> nn.Module:
        """The module to call in training steps (wrapped for data parallelism, compiled, ...);
        ``model`` itself keeps the parameters that checkpoints and the Polyak average read."""
        return model

    def native_bf16(self) -> bool:
        """Whether the device multiplies bfloat16 matrices natively, faster than float32 (what
        ``precision = "auto"`` asks); False unless a backend knows better."""
        return False

    @property
    def precision(self) -> str:
        """``runtime.precision`` with ``auto`` resolved: "fp32" or "bf16"."""
        if self.options.precision == "auto":
            return "bf16" if self.native_bf16() else "fp32"
        return self.options.precision

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def no_sync(self, wrapped: nn.Module) -> contextlib.AbstractContextManager:
        """Skip gradient synchronisation (all but the last micro-batch of an accumulated step)."""
        return contextlib.nullcontext()

    def reduce_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Make every process's gradients those of the global batch, before the loop clips
        them and steps; DDP and FSDP have done so during ``backward``, so by default nothing."""

    def end_step(self) -> None:
        """Called after every training step (XLA cuts its graph here)."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over every process."""
        return tensor

    def gather(self, value: object) -> list:
        """``value`` from every process, by rank (picklable values)."""
        return [value]

    def barrier(self) -> None:
        """Wait for every process."""

    def seed_device(self, seed: int) -> None:
        """Seed the device's random generator where ``torch.manual_seed`` does not (it seeds the
        CPU's and CUDA's)."""

    def device_rng_state(self) -> dict[str, torch.Tensor]:
        """The state of the device's random generator (beyond torch's CPU one, which the trainer
        keeps itself), for a resume that draws what an uninterrupted run draws; {} without one."""
        return {}

    def set_device_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a ``device_rng_state`` (``state`` may hold other keys, and lacks this device's
        when the checkpoint was trained on another kind of device: then leave it as it is)."""

    def model_state(self, model: nn.Module) -> dict:
        """``model``'s whole state on the CPU (gathered when sharded), for checkpoints."""
        return to_cpu(model.state_dict())

    def load_model_state(self, model: nn.Module, state: dict) -> None:
        model.load_state_dict(state)

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        return to_cpu(optimizer.state_dict())

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)

    def stop(self) -> None:
        """Leave the run's process group."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def to_cpu(value):
    """``value`` with every tensor copied to the CPU (checkpoints load anywhere)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value
