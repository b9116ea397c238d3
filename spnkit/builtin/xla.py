"""The ``xla`` backend: TPUs through torch-xla's PJRT runtime (``PJRT_DEVICE=TPU``; ``CPU`` runs
the same graphs on the host, which is how CI tests it). The only module that imports torch_xla.

Steps are traced lazily and cut with ``torch_xla.sync()``; shapes are static (fixed batches,
the target slice chosen by a tensor), so after the first steps nothing recompiles. Gradients are
all-reduced across replicas by ``xm.reduce_gradients`` before the loop clips them, as DDP's are;
launch several with ``torch_xla.launch`` (one process per TPU chip) or use SPMD.
"""

from __future__ import annotations

import importlib.util

import torch

from spnkit.core.backend import Backend
from spnkit.core.hookspecs import hookimpl


class XLABackend(Backend):
    """A TPU (or the host CPU, ``PJRT_DEVICE=CPU``) through torch-xla."""

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("torch_xla") is not None

    def start(self) -> None:
        import torch_xla.runtime as xr

        self.rank, self.world = xr.global_ordinal(), xr.world_size()

    @property
    def device(self) -> torch.device:
        import torch_xla

        return torch_xla.device()

    def seed_device(self, seed: int) -> None:
        import torch_xla.core.xla_model as xm

        xm.set_rng_state(seed)

    def device_rng_state(self) -> dict[str, torch.Tensor]:
        import torch_xla.core.xla_model as xm

        seed = xm.get_rng_state()  # the generator's state: an unsigned 64-bit seed
        return {"xla": torch.tensor(list(seed.to_bytes(8, "little")), dtype=torch.uint8)}  # bytes, as torch's

    def set_device_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        import torch_xla.core.xla_model as xm

        if "xla" in state:  # absent from a checkpoint trained elsewhere
            xm.set_rng_state(int.from_bytes(bytes(state["xla"].tolist()), "little"))

    def reduce_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        import torch_xla.core.xla_model as xm

        xm.reduce_gradients(optimizer)  # the mean over replicas, like DDP's

    def end_step(self) -> None:
        import torch_xla

        torch_xla.sync()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return tensor
        import torch_xla.core.xla_model as xm

        return xm.all_reduce(xm.REDUCE_SUM, tensor)

    def gather(self, value: object) -> list:
        if self.world == 1:
            return [value]
        import torch_xla.core.xla_model as xm

        return list(xm.mesh_reduce("spnkit.gather", value, list))

    def barrier(self) -> None:
        if self.world > 1:
            import torch_xla.core.xla_model as xm

            xm.rendezvous("spnkit")


@hookimpl
def spnkit_register_backends(register):
    register("xla", XLABackend)
