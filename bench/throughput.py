"""Training throughput of a recipe's stages: images/s and peak memory, fp32 against bf16
autocast, measured in one run on one device.

    python bench/throughput.py recipes/quickstart.toml [--device cuda] [--steps 20] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import time

import torch

from spnkit.core import build
from spnkit.core.system import Pipeline


def measure(pipeline: Pipeline, name: str, batch: int, shape: tuple[int, int, int], bits: int,
            device: str, dtype: torch.dtype | None, steps: int) -> tuple[float, float]:
    """(images per second, peak MiB) of ``steps`` training steps of stage ``name``."""
    stage = pipeline.stages[name]
    optimizer = torch.optim.RMSprop(stage.parameters(), lr=1e-4, alpha=0.95, momentum=0.9, eps=1e-8)
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, 2**bits, (batch, *shape), device=device)
    target, cond = pipeline.stage_inputs(name, pipeline.quantizer.encode(x))

    def step() -> None:
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            loss = stage.loss(target, cond, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    return batch * steps / seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, help="default: the recipe's train.batch_size")
    args = parser.parse_args()
    resolved = build.load(args.recipe, args.overrides)
    data = resolved.recipe.data
    batch = args.batch or resolved.recipe.train.batch_size
    torch.manual_seed(0)
    pipeline = build.build_pipeline(resolved).to(args.device)
    print(f"{args.recipe} on {args.device}, batch {batch}, {args.steps} steps")
    print(f"{'stage':<10}{'params':>13}{'fp32 img/s':>12}{'bf16 img/s':>12}{'speed-up':>10}{'fp32 MiB':>10}{'bf16 MiB':>10}")
    for name, stage in pipeline.stages.items():
        shape = (data.channels, data.height, data.width)
        fp32 = measure(pipeline, name, batch, shape, data.bits, args.device, None, args.steps)
        bf16 = measure(pipeline, name, batch, shape, data.bits, args.device, torch.bfloat16, args.steps)
        params = sum(p.numel() for p in stage.parameters())
        print(f"{name:<10}{params:>13,}{fp32[0]:>12.1f}{bf16[0]:>12.1f}{bf16[0] / fp32[0]:>10.2f}{fp32[1]:>10.0f}{bf16[1]:>10.0f}")


if __name__ == "__main__":
    main()
