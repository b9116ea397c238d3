import pytest
import torch

from spnkit import testing
from spnkit_hilbert import HilbertOrdering, hilbert_permutation
from spnkit.interfaces import NoOptions


@pytest.mark.parametrize("side", [1, 2, 4, 8, 16])
def test_round_trip(side):
    testing.check_ordering_round_trip(HilbertOrdering(NoOptions()), 3, side, side)


@pytest.mark.parametrize("side", [2, 4, 8, 32])
def test_consecutive_pixels_are_neighbours(side):
    order = hilbert_permutation(side)
    rows, cols = order // side, order % side
    steps = (rows.diff().abs() + cols.diff().abs())
    assert torch.all(steps == 1)


def test_rejects_non_square_or_non_power_of_two():
    ordering = HilbertOrdering(NoOptions())
    assert ordering.check(4, 8) and ordering.check(6, 6) and not ordering.check(8, 8)
