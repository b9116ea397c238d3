import re

import pytest
import torch

from spnkit import testing
from spnkit.nn.gated import GatedPixelCNNOptions
from spnkit.builtin.transformer import Hybrid, HybridOptions, MaskedTransformer, MaskedTransformerOptions
from spnkit.core.interfaces import SliceSpec, one_hot

ATTENTION = MaskedTransformerOptions(layers=2, heads=2, channels=8)
DECODERS = {
    "masked_transformer": lambda spec: MaskedTransformer(ATTENTION, spec),
    "hybrid": lambda spec: Hybrid(HybridOptions(ATTENTION, GatedPixelCNNOptions(layers=2, channels=6, residual_channels=6)), spec),
}


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("channels,context", [(1, 0), (3, 0), (3, 4)])
def test_causal(name, channels, context):
    torch.manual_seed(0)
    testing.check_decoder_causality(DECODERS[name](SliceSpec(channels, 3, 4, 3, context)))


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("channels,size,context", [(1, (3, 3), 0), (3, (2, 2), 0), (3, (2, 2), 3)])
def test_normalized(name, channels, size, context):
    torch.manual_seed(0)
    testing.check_decoder_normalization(DECODERS[name](SliceSpec(channels, *size, 2, context)))


def test_features_at_a_pixel_do_not_see_the_pixel_itself():
    """The hybrid feeds these features to the PixelCNN as conditioning: they must be strictly causal."""
    torch.manual_seed(0)
    decoder = DECODERS["hybrid"](SliceSpec(3, 3, 3, 4))
    x = one_hot(torch.randint(0, 4, (2, 3, 3, 3)), 4).requires_grad_(True)
    features = decoder.attention(x)
    weights = torch.randn(features[:, :, 1, 1].shape)  # a plain sum of layer-normed features is constant
    (grad,) = torch.autograd.grad((features[:, :, 1, 1] * weights).sum(), x)
    touched = grad.abs().sum(dim=(0, 1, 2)) > 0
    assert not touched[1, 1:].any() and not touched[2].any()
    assert touched[1, 0] and touched[0].all()


def test_options_reject_heads_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match=re.escape("must divide 'channels' (32), got 3")):
        MaskedTransformerOptions(heads=3, channels=32)


@pytest.mark.parametrize("name", DECODERS)
def test_training_lowers_the_loss(name):
    torch.manual_seed(0)
    testing.check_decoder_learns(DECODERS[name](SliceSpec(1, 6, 6, 4)), lr=3e-3)
