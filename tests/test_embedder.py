import re

import pytest
import torch

from spnkit import testing
from spnkit.builtin.embedder import SliceEmbedder, SliceEmbedderOptions, relative_offsets, slot_table
from spnkit.core.interfaces import EncoderSpec, one_hot

SMALL = SliceEmbedderOptions(conv_layers=2, channels=8, attention_layers=1, heads=2, attention_channels=8,
                             residual_blocks=1, residual_channels=8)


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (2, 3), (3, 2)])
@pytest.mark.parametrize("cond_levels", [0, 4])
def test_causal(grid, cond_levels):
    torch.manual_seed(0)
    testing.check_encoder_causality(SliceEmbedder(SMALL, EncoderSpec(3, 3, 2, 2, grid, cond_levels)))


def test_slots_hold_slices_at_their_relative_position():
    rows, cols = 3, 3
    table = slot_table(rows, cols)
    offsets = relative_offsets(rows, cols)
    left, up = offsets.index((0, -1)), offsets.index((-1, 0))
    n = rows * cols
    for target in range(n):
        i, j = divmod(target, cols)
        assert table[target, left] == (target - 1 if j > 0 else n)
        assert table[target, up] == (target - cols if i > 0 else n)
        assert (table[target] < target).logical_or(table[target] == n).all()


def test_input_depth_does_not_depend_on_the_target():
    spec = EncoderSpec(1, 2, 2, 3, (2, 2))
    embedder = SliceEmbedder(SMALL, spec)
    slices = one_hot(torch.randint(0, 3, (1, 4, 1, 2, 2)), 3).movedim(1, 2)
    shapes = {tuple(embedder.stack(slices, torch.tensor([t])).shape) for t in range(4)}
    assert len(shapes) == 1
    assert shapes.pop()[1] == len(relative_offsets(2, 2)) * 3


def test_stack_holds_each_slice_at_its_relative_position():
    """On a 2x3 grid the (0, -1) slot holds slice (i, j - 1), empty for j == 0; the (-1, 1) slot
    holds slice (i - 1, j + 1), empty on the top row and in the last column."""
    rows, cols = 2, 3
    embedder = SliceEmbedder(SMALL, EncoderSpec(1, 2, 2, 2, (rows, cols)))
    slices = one_hot(torch.randint(0, 2, (1, rows * cols, 1, 2, 2)), 2).movedim(1, 2)
    offsets = relative_offsets(rows, cols)
    for target in range(rows * cols):
        stack = embedder.stack(slices, torch.tensor([target])).view(len(offsets), -1)
        for di, dj in [(0, -1), (-1, 1)]:
            i, j = divmod(target, cols)
            expected = torch.zeros(stack.shape[1])
            if 0 <= i + di < rows and 0 <= j + dj < cols:
                expected = slices[0, (i + di) * cols + j + dj].flatten()
            assert torch.equal(stack[offsets.index((di, dj))], expected), (target, di, dj)


def test_options_reject_heads_that_do_not_divide_and_even_filters():
    with pytest.raises(ValueError, match=re.escape("must divide 'attention_channels' (32), got 3")):
        SliceEmbedderOptions(heads=3, attention_channels=32)
    with pytest.raises(ValueError, match="must be a positive odd number, got 4"):
        SliceEmbedderOptions(filter_size=4)


def test_leaky_slot_table_is_caught():
    embedder = SliceEmbedder(SMALL, EncoderSpec(1, 2, 2, 2, (2, 2)))
    embedder.slots[1, 0] = 1  # the target itself in a slot
    with pytest.raises(testing.ConformanceError, match="reads slices"):
        testing.check_encoder_causality(embedder)
