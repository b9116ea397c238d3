"""Exact evaluation: every slice of every test image, per stage and for the system."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from tqdm import tqdm

from spnkit.core.backend import Backend
from spnkit.core.system import Pipeline
from spnkit.data import DataError


@torch.no_grad()
def bits_per_dim(pipeline: Pipeline, batches: Iterable[dict], to_levels: Callable[[torch.Tensor], torch.Tensor],
                 limit: int = 0, total: int | None = None, progress: bool = True, side: str | None = None,
                 backend: Backend | None = None, origin: str | None = None, no_labels: bool = False) -> dict:
    """``{"test_bits_per_dim": system, "stages": {name: share}, "images": N}`` over ``batches``
    (dicts with ``images`` ``[B, C, H, W]`` uint8 and ``valid`` ``[B]`` bool, as
    ``spnkit.data.loader.exact_batches`` yields; ``to_levels``, the data config's, maps the
    pixels to what the pipeline models), the first ``limit`` valid images when
    ``limit > 0``; ``side`` (``"labels"`` or ``"vectors"``): given each image's side information
    (``labels`` ``[B]`` int64 or ``vectors`` ``[B, K]``), so the result is the conditional
    bits/dim; with ``no_labels`` too, every label is "no label" (``-1``), so a model trained with
    dropped labels gives its ``p(x)``. With a multi-process ``backend``, each process passes its share of the batches
    and the totals are summed over processes. Each stage's share is its NLL in bits over all
    dims of the image, so the shares add up to the system.

    A figure over fewer images than the split holds is a ``DataError``, not a result: when the
    split's size ``total`` is known and fewer were scored (the first ``limit`` excepted, a
    deliberate subset), when damaged samples were passed over (``skipped`` in the batches,
    counted until ``limit`` images are scored), or when nothing was scored at all; ``origin``
    names the split in that error."""
    pipeline.eval()
    device = next(pipeline.parameters()).device
    totals = {name: 0.0 for name in pipeline.stages}
    count, dims, skipped = 0, 0, 0
    bar = tqdm(total=limit or total, desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True)
    for batch in batches:
        skipped += batch.get("skipped", 0)
        valid = batch["valid"].to(device)
        if limit:
            valid = valid & (valid.cumsum(0) <= limit - count)
        taken = int(valid.sum())
        if taken:
            images = to_levels(batch["images"].to(device))
            dims = images[0].numel()
            given = batch[side].to(device) if side else None
            if side == "labels":  # padding rows get a valid label; they do not count
                given = torch.full_like(given, -1) if no_labels else torch.where(valid, given, 0)
            for name, log_prob in pipeline.log_prob(images, given).items():
                totals[name] += -(log_prob.double() * valid).sum().item()
            count += taken
            bar.update(taken)
        if limit and count >= limit:
            break
    bar.close()
    if backend is not None and backend.world > 1:
        summed = backend.sum(torch.tensor([*totals.values(), count, skipped], dtype=torch.float64, device=device))
        totals = dict(zip(totals, summed[:-2].tolist()))
        count, skipped, dims = int(summed[-2]), int(summed[-1]), max(backend.gather(dims))
    _check_complete(count, skipped, limit, total, origin)
    stages = {name: nats / (max(count, 1) * dims * math.log(2)) if count else float("nan")
              for name, nats in totals.items()}
    return {"test_bits_per_dim": sum(stages.values()), "stages": stages, "images": count}


def _check_complete(count: int, skipped: int, limit: int, total: int | None, origin: str | None) -> None:
    """A ``DataError`` unless ``count`` images are the whole split (or the ``limit`` asked for)."""
    if limit and count >= limit:
        return
    expected = min(limit, total) if limit and total is not None else total
    split = f"the test split ({origin})" if origin else "the test split"
    tail = "the figure would not be the test set's"
    if expected is not None and count < expected:
        raise DataError(f"eval: scored {count} of {expected} test images ({expected - count} could not be read: "
                        f"see the warnings); {tail}")
    if skipped:
        what = "damaged sample or shard" if skipped == 1 else "damaged samples or shards"
        raise DataError(f"eval: scored {count} test images; {skipped} {what} could not be read (see the warnings); "
                        f"{tail}")
    if not count:
        raise DataError(f"eval: {split} holds no images; there is nothing to score")


GIVEN_CODE = "test_bits_per_dim_given_code"
"""The key of a system's figure when stages are given the code of their own input image."""


def given_code(result: dict, stages: list[str]) -> dict:
    """``result`` of a system whose ``stages`` are each given the code of their own input (an
    auto-encoder's): ``-log p(x | code(x))`` is not a likelihood of ``x``, so the system's
    figure moves from ``test_bits_per_dim`` to ``GIVEN_CODE`` and ``given_code`` names those
    stages; no figure of it sits where unconditional ones do."""
    result = dict(result)
    figure = result.pop("test_bits_per_dim")
    return {GIVEN_CODE: figure, "given_code": list(stages), **result}


def system_figure(result: dict) -> tuple[str, float]:
    """``(key, value)`` of a result's system figure: ``test_bits_per_dim`` or ``GIVEN_CODE``."""
    key = GIVEN_CODE if GIVEN_CODE in result else "test_bits_per_dim"
    return key, result[key]


def describe(result: dict) -> str:
    """``test bits/dim 3.21 = 0.71 (low) + 2.50 (high)``, as the paper reports systems; damaged
    samples passed over on the way to ``eval.max_images`` are counted; the figure without
    labels follows on a second line where there is one. A system given its codes says
    ``bits/dim given the code``, and which stages were given theirs."""
    skipped = len(result.get("skipped") or [])
    noted = f"; {skipped} damaged sample{'s' if skipped != 1 else ''} skipped" if skipped else ""
    if GIVEN_CODE in result:
        return (f"test bits/dim given the code {_terms(result, GIVEN_CODE)}  [{result['images']} images{noted}]\n"
                f"(-log p(x | code of x), stages {', '.join(result['given_code'])} given the code of their own "
                "input: not a likelihood of the images)")
    text = f"test bits/dim {_terms(result)}  [{result['images']} images{noted}]"
    if "no_label" in result:
        text += f"\nwithout labels ('no label' given): test bits/dim {_terms(result['no_label'])}"
    return text


def _terms(result: dict, key: str = "test_bits_per_dim") -> str:
    parts = " + ".join(f"{bpd:.4f} ({name})" for name, bpd in result["stages"].items())
    return f"{result[key]:.4f} = {parts}"
