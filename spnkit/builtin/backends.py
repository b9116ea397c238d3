"""The ``cpu`` and ``cuda`` backends: native PyTorch, several processes through ``torchrun``
(gloo on CPUs, NCCL on GPUs), replicas with DDP or sharded parameters with FSDP2
(``fully_shard``), bf16 autocast and optional ``torch.compile``."""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn

from spnkit.core.backend import Backend
from spnkit.core.hookspecs import hookimpl


class TorchBackend(Backend):
    """Shared by cpu and cuda: ``torch.distributed`` when ``torchrun`` set ``WORLD_SIZE``."""

    process_group = "gloo"

    def start(self) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            dist.init_process_group(self.process_group)
        if dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def prepare(self, model: nn.Module) -> nn.Module:
        wrapped = model
        if self.world > 1 and self.options.parallel == "fsdp":
            from torch.distributed.fsdp import fully_shard

            wrapped = fully_shard(model)
        elif self.world > 1:
            wrapped = nn.parallel.DistributedDataParallel(model, device_ids=self._device_ids())
        return torch.compile(wrapped) if self.options.compile else wrapped

    def _device_ids(self) -> list[int] | None:
        return None

    def no_sync(self, wrapped: nn.Module) -> contextlib.AbstractContextManager:
        inner = getattr(wrapped, "_orig_mod", wrapped)  # under torch.compile
        if isinstance(inner, nn.parallel.DistributedDataParallel):
            return inner.no_sync()
        return contextlib.nullcontext()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
        return tensor

    def gather(self, value: object) -> list:
        if self.world == 1:
            return [value]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    @property
    def sharded(self) -> bool:
        return self.world > 1 and self.options.parallel == "fsdp"

    def model_state(self, model: nn.Module) -> dict:
        if not self.sharded:
            return super().model_state(model)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_model_state(self, model: nn.Module, state: dict) -> None:
        if not self.sharded:
            return super().load_model_state(model, state)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        if not self.sharded:
            return super().optimizer_state(model, optimizer)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if not self.sharded:
            return super().load_optimizer_state(model, optimizer, state)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def stop(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


class CPUBackend(TorchBackend):
    """This machine's CPU cores; several processes talk through gloo."""

    @classmethod
    def available(cls) -> bool:
        return True

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def native_bf16(self) -> bool:
        # torch has no public query for AMX: its CPU feature report says (torch >= 2.10), else
        # its AMX tile check (every CPU with AMX tiles so far multiplies bfloat16 on them)
        report = getattr(torch._C._cpu, "_get_cpu_capability", None)
        if report is not None:
            return bool(report().get("amx_bf16", False))
        return bool(getattr(torch._C._cpu, "_is_amx_tile_supported", lambda: False)())


class CUDABackend(TorchBackend):
    """NVIDIA GPUs, one per process (``LOCAL_RANK``); several processes talk through NCCL."""

    process_group = "nccl"

    @classmethod
    def available(cls) -> bool:
        return torch.cuda.is_available()

    def start(self) -> None:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        super().start()

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device())

    def _device_ids(self) -> list[int]:
        return [torch.cuda.current_device()]

    def device_rng_state(self) -> dict[str, torch.Tensor]:
        return {"cuda": torch.cuda.get_rng_state(torch.cuda.current_device())}

    def set_device_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        if "cuda" in state:  # absent from a checkpoint trained elsewhere
            torch.cuda.set_rng_state(state["cuda"], torch.cuda.current_device())

    def native_bf16(self) -> bool:
        return torch.cuda.is_bf16_supported(including_emulation=False)


@hookimpl
def spnkit_register_backends(register):
    register("cpu", CPUBackend)
    register("cuda", CUDABackend)
