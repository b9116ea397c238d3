import re

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
    assert slices.shape == (1, s * s, 1, height // s, width // s)


def test_raster_is_one_slice_in_raster_order():
    ordering = RasterOrdering(NoOptions())
    ranks = ordering.ranks(3, 2, 2)
    # raster over pixels, then R, G, B inside a pixel: subpixel (c, y, x) is number 3 * (2y + x) + c
    assert ranks.tolist() == [[[0, 3], [6, 9]], [[1, 4], [7, 10]], [[2, 5], [8, 11]]]
    assert ordering.num_slices(2, 2) == 1 and ordering.slice_shape(2, 2) == (2, 2)


def test_subscale_rejects_indivisible_size():
    ordering = SubscaleOrdering(SubscaleOptions(4))
    assert ordering.check(8, 6) == ["image size 8x6 is not divisible by the subscale factor 4"]
    assert ordering.check(6, 8) == ["image size 6x8 is not divisible by the subscale factor 4"]
    assert ordering.check(8, 12) == []


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
    assert DepthSplit(DepthSplitOptions([3, 4]), 8).check() == ["splits [3, 4] sum to 7 bits but the data has 8"]
    assert DepthSplit(DepthSplitOptions([3, 5]), 8).check() == []


def test_reduce_bits_checks_bits_and_splits():
    assert ReduceBits(ReduceBitsOptions(5, [3, 2]), 8).check() == []
    assert ReduceBits(ReduceBitsOptions(6), 5).check() == ["bits 6 exceeds the data's 5"]
    assert ReduceBits(ReduceBitsOptions(5, [3, 3]), 8).check() == ["splits [3, 3] sum to 6, not bits 5"]
    assert ReduceBits(ReduceBitsOptions(6, [4, 4]), 5).check() == ["bits 6 exceeds the data's 5",
                                                                  "splits [4, 4] sum to 8, not bits 6"]
    with pytest.raises(ValueError, match=r"'bits' must be in \[1, 8\], got 9"):
        ReduceBitsOptions(9)


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

    # the last slice of the 4x4 order (S = 2) starts at x[1, 1]: flat index 5 in image 0, 16 + 5 in image 1
    with pytest.raises(testing.ConformanceError, match=re.escape(
            "to_slices drops or repeats subpixels (e.g. missing flat indices [5, 21])")):
        testing.check_ordering_round_trip(DroppingOrdering(SubscaleOptions(2)), 1, 4, 4)
