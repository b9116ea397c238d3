"""Receptive fields: the gated stack has no blind spot; a plain masked-conv stack has one.

The gated PixelCNN with L layers of filter k (reach r = L * (k//2)) predicts subpixel (c, y, x)
from every channel of the pixels in rows y-r-1 .. y-1 with |dx| <= r (the vertical stack,
shifted down a row), of x-r .. x-1 on row y (the horizontal stack), and from channels < c of
pixel (y, x) itself; from nothing else.
"""

import itertools

import pytest
import torch

from spnkit import testing
from spnkit.builtin.pixelcnn import PixelCNN, PixelCNNOptions
from spnkit.nn.gated import GatedPixelCNN, GatedPixelCNNOptions
from spnkit.core.interfaces import SliceSpec


def window(height, width, row, col, rows_above, reach):
    """Earlier pixels within reach: ``rows_above`` rows above with ``|dx| <= reach``, and
    ``reach`` pixels to the left on the current row."""
    out = torch.zeros(height, width, dtype=torch.bool)
    out[max(row - rows_above, 0) : row, max(col - reach, 0) : col + reach + 1] = True
    out[row, max(col - reach, 0) : col] = True
    return out


def earlier(height, width, row, col):
    out = torch.zeros(height, width, dtype=torch.bool)
    out[:row] = True
    out[row, :col] = True
    return out


@pytest.mark.parametrize("layers,filter_size", [(3, 3), (2, 5), (4, 3)])
def test_gated_pixelcnn_sees_its_whole_window(layers, filter_size):
    """After L layers of filter k the prediction at (y, x) depends on exactly the pixels in rows
    y-1-L*(k//2) .. y-1 with |dx| <= L*(k//2), and x-L*(k//2) .. x-1 on row y: no blind spot,
    no triangle, nothing later."""
    torch.manual_seed(0)
    size, row, col = 15, 11, 7
    reach = layers * (filter_size // 2)
    decoder = GatedPixelCNN(GatedPixelCNNOptions(layers=layers, filter_size=filter_size, channels=4, residual_channels=4),
                            SliceSpec(1, size, size, 2))
    field = testing.receptive_field(decoder, row, col)[0]
    assert torch.equal(field, window(size, size, row, col, reach + 1, reach))


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_gated_pixelcnn_masks_channels_inside_its_window(channel):
    """RGB: the logits of channel c at (y, x) see every channel of every pixel in the window
    above, and of the current pixel exactly the channels before c."""
    torch.manual_seed(0)
    size, row, col, layers = 11, 8, 5, 3
    reach = layers  # filter 3: one pixel further per layer
    decoder = GatedPixelCNN(GatedPixelCNNOptions(layers=layers, channels=24, residual_channels=24),
                            SliceSpec(3, size, size, 2))
    field = testing.receptive_field(decoder, row, col, channel)
    expected = window(size, size, row, col, reach + 1, reach).expand(3, -1, -1).clone()
    expected[:channel, row, col] = True
    assert torch.equal(field, expected)


def test_gated_pixelcnn_sees_every_earlier_subpixel_of_a_small_slice():
    """A 5x4 RGB slice lies inside the reach of 3 layers of filter 3, so the logits of every
    subpixel depend on exactly the subpixels before it: nothing later leaks (what the
    causality check asserts) and nothing earlier is lost, so that check is not vacuous."""
    torch.manual_seed(0)
    channels, height, width = 3, 5, 4
    decoder = GatedPixelCNN(GatedPixelCNNOptions(layers=3, channels=24, residual_channels=24),
                            SliceSpec(channels, height, width, 2))
    for channel, row, col in itertools.product(range(channels), range(height), range(width)):
        expected = earlier(height, width, row, col).expand(channels, -1, -1).clone()
        expected[:channel, row, col] = True
        assert torch.equal(testing.receptive_field(decoder, row, col, channel), expected), (channel, row, col)


def test_plain_masked_stack_has_the_blind_spot():
    """The same check fails for stacked 3x3 mask-B convolutions: pixels above and to the right
    inside the window are never seen (van den Oord et al. 2016c, Figure 1)."""
    torch.manual_seed(0)
    size, row, col, layers = 15, 11, 7, 3
    decoder = PixelCNN(PixelCNNOptions(layers=layers, channels=4, head_channels=4), SliceSpec(1, size, size, 2))
    field = testing.receptive_field(decoder, row, col)[0]
    reach = 3 + layers  # 7x7 first layer, then one pixel per 3x3 layer
    expected = window(size, size, row, col, reach, reach)
    blind = expected & ~field
    assert blind.any()
    assert blind[row - 1, col + 4 : col + reach + 1].all()  # the classic blind spot: up and to the right
    assert not (field & ~earlier(size, size, row, col)).any()
