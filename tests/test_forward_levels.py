"""The training and evaluation path: decoders' ``forward_levels`` (gathers in place of the
one-hot convolutions), the per-subpixel NLL on channels-last logits, and exact evaluation with
every target slice of a batch in one decoder call."""

import pytest
import torch

from fixtures import DenseMaskedDecoder, DenseOptions
from spnkit import testing
from spnkit.core.interfaces import SliceSpec, one_hot
from spnkit.core.system import subpixel_nll
from spnkit.nn.masked_conv import HorizontalConv, MaskedConv2d, VerticalConv, pixels_as_features
from test_builtin_stages import DECODERS, stage


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("channels,levels,context", [(1, 256, 0), (3, 4, 0), (3, 5, 3)])
def test_forward_levels_is_forward_of_the_one_hot(name, channels, levels, context):
    torch.manual_seed(0)
    testing.check_decoder_levels(DECODERS[name](SliceSpec(channels, 5, 4, levels, context)))


@pytest.mark.parametrize("conv", [
    lambda c, n: MaskedConv2d(c * n, 6, (7, 7), c, "A"),
    lambda c, n: MaskedConv2d(c * n, 6, (3, 5), c, "B"),
    lambda c, n: HorizontalConv(c * n, 8, 5, c, "A", out_chunks=2),
    lambda c, n: VerticalConv(c * n, 8, 3),
])
@pytest.mark.parametrize("channels,levels", [(1, 256), (3, 4)])
def test_a_gather_computes_the_convolution_of_the_one_hot(conv, channels, levels):
    torch.manual_seed(0)
    layer = conv(channels, levels)
    x = torch.randint(0, levels, (2, channels, 6, 5))
    expected = layer(pixels_as_features(one_hot(x, levels)))
    got = layer.of_levels(x, levels)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_the_levels_check_catches_a_forward_levels_that_differs():
    class Shifted(DenseMaskedDecoder):
        def forward_levels(self, levels, context=None):
            return super().forward_levels(levels, context) + 1e-3

    with pytest.raises(testing.ConformanceError, match="logits off by"):
        testing.check_decoder_levels(Shifted(DenseOptions(), SliceSpec(1, 2, 2, 3)))
    testing.check_decoder_levels(DenseMaskedDecoder(DenseOptions(), SliceSpec(1, 2, 2, 3)))  # the default


def test_subpixel_nll_is_the_cross_entropy_of_each_subpixel():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 7, 3, 4, 5), torch.randint(0, 7, (2, 3, 4, 5))
    expected = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(subpixel_nll(logits, target), expected)
    channels_last = logits.permute(0, 3, 4, 2, 1).contiguous().permute(0, 4, 3, 1, 2)
    torch.testing.assert_close(subpixel_nll(channels_last, target), expected)


def test_log_prob_is_the_same_in_one_decoder_call_or_one_per_slice():
    subscale = stage("hybrid", 1, (6, 6), factor=2, levels=4, cond_levels=2, given=1)
    subscale.eval()
    torch.manual_seed(1)
    x, cond = torch.randint(0, 4, (5, 1, 6, 6)), torch.randint(0, 2, (5, 1, 6, 6))
    with torch.no_grad():
        together = subscale.log_prob(x, cond)  # 5 images x 3 modelled slices of 3x3: one call
        subscale.eval_positions = 1  # one slice per call
        apart = subscale.log_prob(x, cond)
        logits = subscale.logits(one_hot(x, 4), cond)
    torch.testing.assert_close(together, apart)
    modelled = subscale.ranks() >= 9  # the given first slice (9 subpixels) is not modelled
    from_logits = -(subpixel_nll(logits, x) * modelled).sum(dim=(1, 2, 3))
    torch.testing.assert_close(from_logits, together)
