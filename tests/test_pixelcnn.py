import pytest
import torch

from spnkit import testing
from spnkit.builtin.pixelcnn import PixelCNN, PixelCNNOptions
from spnkit.nn.gated import GatedPixelCNN, GatedPixelCNNOptions
from spnkit.core.interfaces import SliceSpec, one_hot

DECODERS = {
    "pixelcnn": lambda spec: PixelCNN(PixelCNNOptions(layers=2, channels=6, head_channels=6), spec),
    "gated_pixelcnn": lambda spec: GatedPixelCNN(GatedPixelCNNOptions(layers=3, channels=6, residual_channels=6), spec),
}


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("channels,context", [(1, 0), (3, 0), (1, 4), (3, 4)])
def test_causal(name, channels, context):
    torch.manual_seed(0)
    testing.check_decoder_causality(DECODERS[name](SliceSpec(channels, 5, 4, 3, context)))


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("channels,size,levels,context",
                         [(1, (3, 3), 2, 0), (3, (2, 2), 2, 0), (3, (2, 2), 2, 5), (1, (2, 4), 2, 2), (1, (2, 2), 4, 3)])
def test_normalized(name, channels, size, levels, context):
    torch.manual_seed(0)
    testing.check_decoder_normalization(DECODERS[name](SliceSpec(channels, *size, levels, context)))


def test_context_changes_the_prediction():
    torch.manual_seed(0)
    decoder = DECODERS["gated_pixelcnn"](SliceSpec(1, 4, 4, 3, context_channels=2))
    x = one_hot(torch.randint(0, 3, (1, 1, 4, 4)), 3)
    a = decoder(x, torch.zeros(1, 2, 4, 4))
    b = decoder(x, torch.ones(1, 2, 4, 4))
    assert not torch.allclose(a, b)


def test_uneven_channel_groups_stay_causal_and_too_few_features_are_refused():
    torch.manual_seed(0)
    testing.check_decoder_causality(GatedPixelCNN(GatedPixelCNNOptions(layers=2, channels=7, residual_channels=8),
                                                  SliceSpec(3, 3, 3, 3)))
    with pytest.raises(ValueError, match="must be at least the image channels"):
        GatedPixelCNN(GatedPixelCNNOptions(channels=2), SliceSpec(3, 4, 4, 4))


@pytest.mark.parametrize("name", DECODERS)
def test_training_lowers_the_loss(name):
    torch.manual_seed(0)
    testing.check_decoder_learns(DECODERS[name](SliceSpec(3, 6, 6, 4)), lr=1e-2)
