import pytest
import torch

from spnkit import testing
from spnkit.builtin.embedder import SliceEmbedder, SliceEmbedderOptions, relative_offsets, slot_table
from spnkit.interfaces import EncoderSpec, one_hot

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


def test_equivariance_same_neighbourhood_same_stack():
    """Targets (1, 1) and (1, 2) whose left neighbours hold the same slice get the same stack
    entry in the (0, -1) slot."""
    spec = EncoderSpec(1, 2, 2, 2, (2, 3))
    embedder = SliceEmbedder(SMALL, spec)
    slices = one_hot(torch.randint(0, 2, (1, 6, 1, 2, 2)), 2).movedim(1, 2)
    slices[:, 4] = slices[:, 3]
    offsets = relative_offsets(2, 3)
    k = offsets.index((0, -1))
    a = embedder.stack(slices, torch.tensor([4])).view(1, len(offsets), -1)[:, k]
    b = embedder.stack(slices, torch.tensor([5])).view(1, len(offsets), -1)[:, k]
    assert torch.equal(a, b)


def test_leaky_slot_table_is_caught():
    embedder = SliceEmbedder(SMALL, EncoderSpec(1, 2, 2, 2, (2, 2)))
    embedder.slots[1, 0] = 1  # the target itself in a slot
    with pytest.raises(testing.ConformanceError, match="reads slices"):
        testing.check_encoder_causality(embedder)
