import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spnkit import testing
from spnkit.builtin.orderings import RasterOrdering, SubscaleOptions, SubscaleOrdering
from spnkit.builtin.quantizers import DepthSplit, DepthSplitOptions, ReduceBits, ReduceBitsOptions
from spnkit.core.interfaces import NoOptions


@settings(max_examples=60, deadline=None)
@given(factor=st.integers(1, 4), rows=st.integers(1, 4), cols=st.integers(1, 4), channels=st.integers(1, 3))
def test_subscale_round_trip_any_divisible_shape(factor, rows, cols, channels):
    testing.check_ordering_round_trip(SubscaleOrdering(SubscaleOptions(factor)), channels, factor * rows, factor * cols)


def test_subscale_follows_paper_eq2():
    """Slice (i, j) holds x[i + S*h, j + S*w]; slices in row-major (i, j) order."""
    s, height, width = 3, 6, 9
    x = torch.arange(height * width).view(1, 1, height, width)
    slices = SubscaleOrdering(SubscaleOptions(s)).to_slices(x)
    for i in range(s):
        for j in range(s):
            expected = x[0, 0, i::s, j::s]
            assert torch.equal(slices[0, i * s + j, 0], expected)


def test_raster_is_one_slice_in_raster_order():
    ordering = RasterOrdering(NoOptions())
    ranks = ordering.ranks(3, 2, 2)
    # raster over pixels, then R, G, B inside a pixel
    assert ranks[:, 0, 0].tolist() == [0, 1, 2]
    assert ranks[:, 0, 1].tolist() == [3, 4, 5]
    assert ranks[0, 1, 0] == 6


def test_subscale_rejects_indivisible_size():
    assert SubscaleOrdering(SubscaleOptions(4)).check(8, 6)


@settings(max_examples=60, deadline=None)
@given(splits=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=st.integers(0, 1000))
def test_depth_split_round_trip(splits, seed):
    quantizer = DepthSplit(DepthSplitOptions(splits), sum(splits))
    assert quantizer.check() == []
    testing.check_quantizer_round_trip(quantizer, seed=seed)
    x = torch.randint(0, 1 << sum(splits), (5, 3, 2, 2), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(quantizer.decode(quantizer.encode(x)), x)


def test_depth_split_most_significant_first():
    quantizer = DepthSplit(DepthSplitOptions([3, 5]), 8)
    high, low = quantizer.encode(torch.tensor([[[[0b101_10011]]]]))
    assert high.item() == 0b101 and low.item() == 0b10011


def test_depth_split_three_way():
    quantizer = DepthSplit(DepthSplitOptions([3, 2, 3]), 8)
    planes = quantizer.encode(torch.tensor([[[[0b110_01_111]]]]))
    assert [p.item() for p in planes] == [0b110, 0b01, 0b111]
    assert quantizer.conditioning(planes[:2]).item() == 0b11001


def test_depth_split_sum_checked():
    assert DepthSplit(DepthSplitOptions([3, 4]), 8).check()


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), seed=st.integers(0, 1000))
def test_reduce_bits_round_trip(bits, seed):
    quantizer = ReduceBits(ReduceBitsOptions(bits), 8)
    testing.check_quantizer_round_trip(quantizer, seed=seed)
    x = torch.randint(0, 256, (50, 1, 2, 2), generator=torch.Generator().manual_seed(seed))
    kept = quantizer.decode(quantizer.encode(x))
    assert torch.equal(kept, x >> (8 - bits) << (8 - bits))


def test_reduce_bits_then_split():
    quantizer = ReduceBits(ReduceBitsOptions(5, [3, 2]), 8)
    planes = quantizer.encode(torch.tensor([[[[0b101_10_011]]]]))
    assert [p.item() for p in planes] == [0b101, 0b10]


def test_kit_catches_an_ordering_that_drops_a_pixel():
    from fixtures import DroppingOrdering

    with pytest.raises(testing.ConformanceError, match="drops or repeats"):
        testing.check_ordering_round_trip(DroppingOrdering(SubscaleOptions(2)), 1, 4, 4)
