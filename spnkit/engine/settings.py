"""Range checks for the engine's settings (``[train]``, ``[eval]``, ``[sample]``, stage
temperatures): types are checked by the recipe schema, values here, all problems at once."""

from __future__ import annotations

from spnkit.recipe import Recipe, RecipeError


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
    need(recipe.eval.batch_size >= 1, "eval.batch_size", ">= 1", recipe.eval.batch_size)
    need(recipe.eval.max_images >= 0, "eval.max_images", ">= 0 (0: the whole test split)", recipe.eval.max_images)
    need(recipe.sample.count >= 1, "sample.count", ">= 1", recipe.sample.count)
    for name, stage in recipe.stages.items():
        need(stage.temperature > 0, f"stages.{name}.temperature", "> 0 (logits are divided by it)", stage.temperature)
    return found


def check(recipe: Recipe) -> None:
    """Raise ``RecipeError`` listing every problem ``problems`` finds."""
    found = problems(recipe)
    if found:
        raise RecipeError(found)
