"""train.seconds: a stage stops at the first checkpoint past its time budget, keeps the time
spent in the checkpoint, and a resumed run counts on from it, bitwise where an uninterrupted
run would be. Time is a fake clock that each step advances by one second (no timed tests)."""

import copy

import pytest

from spnkit.core import build
from spnkit.core.recipe import RecipeError
from spnkit.data.sources import load_split
from spnkit.engine import checkpoint
from spnkit.engine.train import StageTrainer
from test_resume import RECIPE, assert_same_training_state

STAGE = "high"


def recipe(**train) -> build.Resolved:
    raw = copy.deepcopy(RECIPE)
    raw["train"].update({"checkpoint_every": 3, **train})
    return build.validate(raw)


class StepClock:
    """A clock that moves one second per training step (and never otherwise)."""

    def __init__(self, trainer: StageTrainer) -> None:
        self.now = 1000.0
        step = trainer.train_step

        def timed_step():
            self.now += 1.0
            return step()

        trainer.train_step = timed_step
        trainer.clock = lambda: self.now


def trainer(resolved: build.Resolved, folder) -> StageTrainer:
    shards = load_split(resolved.recipe.data, "train").shards
    made = StageTrainer(resolved, STAGE, shards, folder)
    StepClock(made)
    return made


def test_the_budget_stops_at_the_first_checkpoint_past_it_and_resume_counts_on(tmp_path):
    budgeted = trainer(recipe(steps=0, seconds=7.0), tmp_path / "budget")  # steps = 0: no step limit
    budgeted.train(progress=False)
    # 7 s is passed at step 7; checkpoints every 3 steps: the stage stops at step 9, saved there
    state = checkpoint.load(tmp_path / "budget")
    assert (budgeted.step, state["step"], state["seconds"]) == (9, 9, 9.0)
    assert 7 <= state["step"] < 7 + 3

    again = trainer(recipe(steps=0, seconds=7.0), tmp_path / "budget")
    again.train(progress=False)
    assert again.step == 9  # its budget is spent: a rerun trains no further

    longer = trainer(recipe(steps=0, seconds=13.0), tmp_path / "budget")
    assert longer.seconds == 9.0  # read from the checkpoint, not restarted
    longer.train(progress=False)
    state = checkpoint.load(tmp_path / "budget")
    assert (state["step"], state["seconds"]) == (15, 15.0)  # 9 s before the resume + 6 s after

    straight = trainer(recipe(steps=15), tmp_path / "straight")
    straight.train(progress=False)
    assert_same_training_state(checkpoint.load(tmp_path / "straight"), state)


def test_steps_and_seconds_whichever_comes_first(tmp_path):
    by_steps = trainer(recipe(steps=4, seconds=100.0), tmp_path / "steps")
    by_steps.train(progress=False)
    assert by_steps.step == 4 and checkpoint.load(tmp_path / "steps")["seconds"] == 4.0
    by_time = trainer(recipe(steps=100, seconds=2.0), tmp_path / "time")
    by_time.train(progress=False)
    assert by_time.step == 3


def test_without_a_budget_time_is_still_kept(tmp_path):
    plain = trainer(recipe(steps=5), tmp_path / "plain")
    plain.train(progress=False)
    assert checkpoint.load(tmp_path / "plain")["seconds"] == 5.0


@pytest.mark.parametrize("value", [-1.0, float("inf")])
def test_a_bad_budget_is_an_error_line(value):
    with pytest.raises(RecipeError, match=r"^train\.seconds: must be"):
        recipe(seconds=value)
