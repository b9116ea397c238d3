import pytest
import torch

from spnkit import testing
from spnkit_hilbert import HilbertOrdering, hilbert_permutation
from spnkit.core.interfaces import NoOptions


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


def _recipe(decoder: dict) -> dict:
    return {"data": {"height": 4, "width": 4, "channels": 1, "bits": 2},
            "quantizer": {"plugin": "depth_split", "splits": [2]},
            "stages": {"main": {"ordering": {"plugin": "hilbert"}, "decoder": decoder}}}


def test_recipes_pair_it_with_sequence_decoders_only():
    from spnkit.core import build
    from spnkit.core.plugins import load
    from spnkit.core.recipe import RecipeError

    import spnkit_hilbert

    registry = load(autoload=False, extra=[spnkit_hilbert])
    build.validate(_recipe({"plugin": "masked_transformer", "layers": 1, "heads": 1, "channels": 4}), registry)
    with pytest.raises(RecipeError) as info:
        build.validate(_recipe({"plugin": "gated_pixelcnn"}), registry)
    assert ("stages.main.decoder: 'gated_pixelcnn' suits pixel orders ['raster'], "
            "but ordering 'hilbert' lays slices out as 'sequence'") in info.value.problems[0]


def test_a_masked_transformer_stage_over_the_hilbert_order_normalizes():
    from spnkit.core import build
    from spnkit.core.plugins import load

    import spnkit_hilbert

    registry = load(autoload=False, extra=[spnkit_hilbert])
    resolved = build.validate(_recipe({"plugin": "masked_transformer", "layers": 1, "heads": 1, "channels": 4}),
                              registry)
    stage = build.build_stage(resolved, "main")
    assert stage.slice_height == 1 and stage.slice_width == 16
    small = build.validate({**_recipe({"plugin": "masked_transformer", "layers": 1, "heads": 1, "channels": 4}),
                            "data": {"height": 2, "width": 2, "channels": 1, "bits": 2}}, registry)
    testing.check_stage_normalization(build.build_stage(small, "main"))
    testing.check_stage_causality(build.build_stage(small, "main"))
