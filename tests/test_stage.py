"""AutoregressiveStage machinery, checked with simple dense components (the neural built-ins
are checked through the same stage in test_builtin_stages.py)."""

import re

import pytest
import torch

from fixtures import DenseEncoder, DenseEncoderOptions, DenseMaskedDecoder, DenseOptions
from spnkit import testing
from spnkit.builtin.orderings import RasterOrdering, SubscaleOptions, SubscaleOrdering
from spnkit.core.interfaces import EncoderSpec, NoOptions, SliceSpec, Stage
from spnkit.core.system import AutoregressiveStage


def make_stage(channels=1, size=(2, 2), factor=2, levels=2, cond_levels=0, given=0, leak_encoder=False):
    torch.manual_seed(0)
    ordering = RasterOrdering(NoOptions()) if factor == 1 else SubscaleOrdering(SubscaleOptions(factor))
    h, w = ordering.slice_shape(*size)
    encoder = None
    if factor > 1 or cond_levels:
        encoder = DenseEncoder(DenseEncoderOptions(leak=leak_encoder),
                               EncoderSpec(channels, h, w, levels, ordering.grid(*size), cond_levels))
    decoder = DenseMaskedDecoder(DenseOptions(), SliceSpec(channels, h, w, levels, encoder.out_channels if encoder else 0))
    return AutoregressiveStage(ordering, decoder, encoder, (channels, *size), levels, cond_levels, given)


@pytest.mark.parametrize("channels,factor,cond_levels", [(1, 1, 0), (1, 2, 0), (3, 2, 0), (1, 2, 4), (3, 1, 2), (3, 2, 2)])
def test_stage_normalizes_and_is_causal(channels, factor, cond_levels):
    stage = make_stage(channels, factor=factor, cond_levels=cond_levels)
    cond = torch.randint(0, cond_levels, (1, channels, 2, 2)) if cond_levels else None
    testing.check_stage_normalization(stage, cond)
    testing.check_stage_causality(stage, cond)


def test_given_slices_are_conditioning_not_modelled():
    stage = make_stage(1, size=(2, 4), factor=2, given=1)
    # slice 0 of the 2x4 subscale order (S = 2) is x[0, 0] and x[0, 2]: given, so not modelled
    assert stage.modelled_positions() == [(0, 0, 1), (0, 0, 3), (0, 1, 0), (0, 1, 1), (0, 1, 2), (0, 1, 3)]
    assert stage.modelled_dims == 6
    prefix = torch.tensor([[[[1, 0, 1, 0], [0, 0, 0, 0]]]])
    testing.check_stage_normalization(stage, prefix=prefix)
    testing.check_stage_causality(stage)


def test_stage_causality_catches_a_leaking_encoder():
    stage = make_stage(1, size=(2, 2), factor=2, leak_encoder=True)
    # with S = 2 on 2x2 every slice is one pixel, so the leak shows as the first subpixel reading itself
    with pytest.raises(testing.ConformanceError, match=re.escape(
            "stage logits of subpixel (0, 0, 0) depend on later or current inputs [(0, 0, 0)]")):
        testing.check_stage_causality(stage)


def test_loss_is_an_unbiased_estimate_of_the_exact_nll():
    stage = make_stage(1, size=(4, 4), factor=2, levels=4)
    x = torch.randint(0, 4, (3, 1, 4, 4))
    exact = -stage.log_prob(x) / stage.modelled_dims
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([stage.loss(x, generator=g) for _ in range(400)])
    per_example_mean = exact.mean()
    assert abs(draws.mean() - per_example_mean) < 4 * draws.std() / 20


def test_logits_match_log_prob():
    stage = make_stage(3, size=(2, 2), factor=2, levels=3, cond_levels=2)
    x = torch.randint(0, 3, (2, 3, 2, 2))
    cond = torch.randint(0, 2, (2, 3, 2, 2))
    from spnkit.core.interfaces import one_hot

    logits = stage.logits(one_hot(x, 3), cond)
    by_logits = torch.log_softmax(logits, 1).gather(1, x.unsqueeze(1)).sum(dim=(1, 2, 3, 4))
    assert torch.allclose(by_logits, stage.log_prob(x, cond), atol=1e-5)


def test_sampling_reference_and_default_agree_and_respect_prefix():
    stage = make_stage(1, size=(2, 4), factor=2, given=1, levels=3)
    prefix = torch.tensor([[[[2, 0, 1, 0], [0, 0, 0, 0]]]]).repeat(5, 1, 1, 1)
    a = stage.sample(5, prefix=prefix, generator=torch.Generator().manual_seed(3))
    b = stage.sample(5, prefix=prefix, generator=torch.Generator().manual_seed(3), reference=True)
    assert torch.equal(a, b)
    assert torch.equal(a[..., ::2, ::2], prefix[..., ::2, ::2])


def test_autoregressive_stage_sets_everything_the_stage_contract_declares():
    stage = make_stage(3, size=(2, 4), factor=2, levels=3, cond_levels=2, given=1)
    declared = {name for cls in Stage.__mro__ if cls.__module__ == Stage.__module__
                for name in vars(cls).get("__annotations__", {})}
    assert declared == {"channels", "height", "width", "levels", "cond_levels", "ordering", "num_slices",
                        "slice_height", "slice_width", "given_slices", "encoder", "decoder", "conditioner"}
    values = {name: getattr(stage, name) for name in declared}
    assert isinstance(values["ordering"], SubscaleOrdering) and values["ordering"].factor == 2
    assert isinstance(values["encoder"], DenseEncoder) and isinstance(values["decoder"], DenseMaskedDecoder)
    assert (values["channels"], values["height"], values["width"]) == (3, 2, 4)
    assert (values["levels"], values["cond_levels"], values["given_slices"]) == (3, 2, 1)
    assert (values["num_slices"], values["slice_height"], values["slice_width"]) == (4, 1, 2)
    assert values["conditioner"] is None
    assert stage.modelled_dims == len(stage.modelled_positions()) == 3 * 3 * 1 * 2
    assert "modelled_dims" in Stage.__abstractmethods__


def test_sampling_arguments_after_batch_are_keyword_only():
    stage = make_stage(1, size=(2, 4), factor=2, given=1, levels=3)
    prefix = torch.zeros(2, 1, 2, 4, dtype=torch.long)
    with pytest.raises(TypeError, match="positional argument"):
        stage.sample(2, None, prefix)
    assert stage.sample(2, prefix=prefix, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 2, 4)
