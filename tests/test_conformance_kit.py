"""The conformance kit must catch planted bugs, and pass correct components."""

import pytest
import torch

from fixtures import DenseMaskedDecoder, DenseOptions, DroppingOrdering
from spnkit import testing
from spnkit.builtin.orderings import SubscaleOptions
from spnkit.core.interfaces import SliceSpec


@pytest.mark.parametrize("channels", [1, 3])
def test_correct_dense_decoder_passes(channels):
    torch.manual_seed(0)
    decoder = DenseMaskedDecoder(DenseOptions(), SliceSpec(channels, 2, 2, 2, context_channels=3))
    testing.check_decoder_causality(decoder)
    testing.check_decoder_normalization(decoder)


def test_leaked_mask_is_reported_by_causality():
    torch.manual_seed(0)
    decoder = DenseMaskedDecoder(DenseOptions(leak=True), SliceSpec(3, 2, 2, 4))
    with pytest.raises(testing.ConformanceError, match=r"depend on later or current inputs"):
        testing.check_decoder_causality(decoder)


def test_leaked_mask_is_reported_by_normalization():
    torch.manual_seed(0)
    decoder = DenseMaskedDecoder(DenseOptions(leak=True), SliceSpec(1, 2, 2, 2))
    with pytest.raises(testing.ConformanceError, match="sum to"):
        testing.check_decoder_normalization(decoder)


def test_ordering_that_drops_a_pixel_is_reported():
    with pytest.raises(testing.ConformanceError, match="drops or repeats"):
        testing.check_ordering_round_trip(DroppingOrdering(SubscaleOptions(2)), 3, 4, 6)


def test_receptive_field_of_dense_decoder_is_everything_before():
    decoder = DenseMaskedDecoder(DenseOptions(), SliceSpec(1, 3, 3, 2))
    field = testing.receptive_field(decoder, 1, 1)
    assert field.view(-1).tolist() == [True] * 4 + [False] * 5


def test_all_images_enumerates_each_once():
    images = testing.all_images(3, 1, 1, 2)
    assert len(images) == 9 and len({tuple(i.flatten().tolist()) for i in images}) == 9


def test_a_decoder_that_ignores_its_inputs_is_reported():
    class Blind(DenseMaskedDecoder):
        def forward(self, x, context=None):
            return super().forward(torch.zeros_like(x), context)

    decoder = Blind(DenseOptions(), SliceSpec(1, 2, 2, 2))
    with pytest.raises(testing.ConformanceError, match="checked vacuously"):
        testing.check_decoder_causality(decoder)
