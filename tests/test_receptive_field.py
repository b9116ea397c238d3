"""Receptive fields: the gated stack has no blind spot; a plain masked-conv stack has one."""

import pytest
import torch

from spnkit import testing
from spnkit.builtin.pixelcnn import GatedPixelCNN, GatedPixelCNNOptions, PixelCNN, PixelCNNOptions
from spnkit.interfaces import SliceSpec


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
