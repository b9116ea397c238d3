"""Range checks for the engine's settings (``[train]``, ``[eval]``, ``[sample]``, stage
temperatures): types are checked by the recipe schema, values here, all problems at once."""

from __future__ import annotations

from spnkit.core.recipe import Recipe, RecipeError


def problems(recipe: Recipe) -> list[str]:
    """``path: message`` for every setting the engine cannot use."""
    found = []
    train = recipe.train

    def need(ok: bool, path: str, rule: str, value) -> None:
        if not ok:
            found.append(f"{path}: must be {rule}, got {value!r}")

    need(train.steps >= 0, "train.steps", ">= 0", train.steps)
    need(train.batch_size >= 1, "train.batch_size", ">= 1", train.batch_size)
    need(len(train.learning_rate) >= 1, "train.learning_rate", "a non-empty array", train.learning_rate)
    for index, value in enumerate(train.learning_rate):
        need(value > 0, f"train.learning_rate[{index}]", "> 0", value)
    milestones = train.lr_milestones
    if train.learning_rate and len(milestones) != len(train.learning_rate) - 1:
        found.append(f"train.lr_milestones: {len(train.learning_rate)} learning rate(s) need "
                     f"{len(train.learning_rate) - 1} milestone(s) (the steps where the next one starts), "
                     f"got {len(milestones)}")
    elif any(b <= a for a, b in zip([0, *milestones], milestones)):
        found.append(f"train.lr_milestones: must be positive and increasing, got {milestones!r}")
    need(0 <= train.momentum < 1, "train.momentum", "in [0, 1)", train.momentum)
    need(0 <= train.decay < 1, "train.decay", "in [0, 1)", train.decay)
    need(train.eps > 0, "train.eps", "> 0", train.eps)
    need(0 <= train.ema <= 1, "train.ema", "in [0, 1] (the Polyak decay; 0: no averaging)", train.ema)
    need(train.grad_clip > 0, "train.grad_clip", "> 0", train.grad_clip)
    need(train.log_every >= 1, "train.log_every", ">= 1", train.log_every)
    need(train.checkpoint_every >= 1, "train.checkpoint_every", ">= 1", train.checkpoint_every)
    need(train.pixels_per_batch >= 0, "train.pixels_per_batch", ">= 0 (0: use batch_size)", train.pixels_per_batch)
    pixels = recipe.data.height * recipe.data.width
    if train.pixels_per_batch and train.pixels_per_batch % pixels:
        found.append(f"train.pixels_per_batch: {train.pixels_per_batch} is not a multiple of the "
                     f"{recipe.data.height}x{recipe.data.width} = {pixels} pixels of an image")
    need(train.accumulate >= 1, "train.accumulate", ">= 1", train.accumulate)
    if batch_size(recipe) % train.accumulate:
        found.append(f"train.accumulate: {train.accumulate} micro-batches do not divide the batch of "
                     f"{batch_size(recipe)}")
    need(train.precision in ("fp32", "bf16"), "train.precision", '"fp32" or "bf16"', train.precision)
    need(train.parallel in ("ddp", "fsdp"), "train.parallel", '"ddp" or "fsdp"', train.parallel)
    need(recipe.data.workers >= 0, "data.workers", ">= 0", recipe.data.workers)
    need(recipe.data.streams >= 0, "data.streams", ">= 0 (0: ranks x workers)", recipe.data.streams)
    need(recipe.data.max_bad_samples >= 0, "data.max_bad_samples", ">= 0", recipe.data.max_bad_samples)
    need(recipe.eval.batch_size >= 1, "eval.batch_size", ">= 1", recipe.eval.batch_size)
    need(recipe.eval.max_images >= 0, "eval.max_images", ">= 0 (0: the whole test split)", recipe.eval.max_images)
    need(recipe.sample.count >= 1, "sample.count", ">= 1", recipe.sample.count)
    for name, stage in recipe.stages.items():
        need(stage.temperature > 0, f"stages.{name}.temperature", "> 0 (logits are divided by it)", stage.temperature)
    return found


def batch_size(recipe: Recipe) -> int:
    """The global batch: ``train.batch_size``, or ``pixels_per_batch`` over the image's pixels."""
    train = recipe.train
    if train.pixels_per_batch:
        return max(1, train.pixels_per_batch // (recipe.data.height * recipe.data.width))
    return train.batch_size


def check(recipe: Recipe) -> None:
    """Raise ``RecipeError`` listing every problem ``problems`` finds."""
    found = problems(recipe)
    if found:
        raise RecipeError(found)
