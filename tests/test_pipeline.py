"""Whole pipelines: exact normalization over a partition of the variables, and samples that
agree with the model's probabilities."""

import re

import pytest
import torch

from spnkit.core import build

from spnkit import testing

TINY_ENCODER = {"plugin": "slice_embedder", "conv_layers": 1, "channels": 4, "attention_layers": 1, "heads": 1,
                "attention_channels": 4, "residual_blocks": 1, "residual_channels": 4}
TINY_DECODER = {"plugin": "gated_pixelcnn", "layers": 2, "channels": 4, "residual_channels": 4}


def recipe(stages: dict, height=2, width=2, splits=(1, 1)) -> dict:
    return {"data": {"height": height, "width": width, "channels": 1, "bits": sum(splits)},
            "quantizer": {"plugin": "depth_split", "splits": list(splits)}, "stages": stages}


TWO_STAGES = recipe({
    "low": {"plane": 0, "ordering": {"plugin": "subscale", "factor": 2}, "encoder": TINY_ENCODER, "decoder": TINY_DECODER},
    "high": {"plane": 1, "conditions_on": ["low"], "ordering": {"plugin": "subscale", "factor": 2},
             "encoder": TINY_ENCODER, "decoder": TINY_DECODER},
})
THREE_STAGES = recipe({
    "small": {"plane": 0, "downsample": 2, "decoder": TINY_DECODER},
    "upscale": {"plane": 0, "given_slices": 1, "conditions_on": ["small"],
                "ordering": {"plugin": "subscale", "factor": 2}, "encoder": TINY_ENCODER, "decoder": TINY_DECODER},
    "depth": {"plane": 1, "conditions_on": ["upscale"], "ordering": {"plugin": "subscale", "factor": 2},
              "encoder": TINY_ENCODER, "decoder": TINY_DECODER},
}, width=4)


def pipeline_of(raw: dict):
    torch.manual_seed(0)
    return build.build_pipeline(build.validate(raw)).eval()


@pytest.mark.parametrize("raw", [TWO_STAGES, THREE_STAGES], ids=["depth", "size+depth"])
def test_pipeline_probabilities_of_all_images_sum_to_one(raw):
    pipeline = pipeline_of(raw)
    data = raw["data"]
    images = testing.all_images(2 ** data["bits"], 1, data["height"], data["width"])
    with torch.no_grad():
        total = sum(pipeline.log_prob(images).values())
    assert abs(torch.logsumexp(total.double(), 0).exp().item() - 1) < 1e-5


def test_stage_shares_add_up_to_the_system():
    pipeline = pipeline_of(THREE_STAGES)
    x = torch.randint(0, 4, (3, 1, 2, 4))
    shares = pipeline.bits_per_dim(x)
    total = -sum(pipeline.log_prob(x).values()) / (8 * torch.log(torch.tensor(2.0)))
    assert torch.allclose(sum(shares.values()), total)


@pytest.mark.parametrize("raw", [TWO_STAGES, THREE_STAGES], ids=["depth", "size+depth"])
def test_samples_match_model_probabilities(raw):
    """Chi-square test of 6000 samples against the model's probabilities of all images."""
    pipeline = pipeline_of(raw)
    data = raw["data"]
    shape = (1, data["height"], data["width"])
    images = testing.all_images(2 ** data["bits"], *shape)
    with torch.no_grad():
        probs = sum(pipeline.log_prob(images).values()).double().exp()
    draws = pipeline.sample(6000, shape, generator=torch.Generator().manual_seed(1))
    levels = 2 ** data["bits"]
    weights = levels ** torch.arange(images[0].numel() - 1, -1, -1)
    index = (draws.view(len(draws), -1) * weights).sum(1)  # same numbering as all_images
    assert_chi_square_fits(torch.bincount(index, minlength=len(images)).double(), probs * len(draws))


def assert_chi_square_fits(observed: torch.Tensor, expected: torch.Tensor) -> None:
    """Pearson's chi-square, rare cells (expected < 5) pooled into one; the bound
    dof + 3.3 * sqrt(2 dof) + 10 lies above the 0.999 quantile for these degrees of freedom."""
    keep = expected >= 5
    chi2 = (((observed[keep] - expected[keep]) ** 2) / expected[keep]).sum()
    rest_o, rest_e = observed[~keep].sum(), expected[~keep].sum()
    if rest_e > 0:
        chi2 += (rest_o - rest_e) ** 2 / rest_e
    dof = int(keep.sum()) + int(rest_e > 0) - 1
    assert chi2 < dof + 3.3 * (2 * dof) ** 0.5 + 10, (chi2.item(), dof)


ROW_0 = [[[True, True, True, True], [False, False, False, False]]]
EVEN_COLUMNS_OF_ROW_0 = [[[True, False, True, False], [False, False, False, False]]]
NOTHING = [[[False] * 4] * 2]
EVERYTHING = [[[True] * 4] * 2]


# THREE_STAGES on 1x2x4: "small" models x[::2, ::2] (= x[0, 0], x[0, 2]) of plane 0; "upscale" is
# the subscale order (S = 2) of plane 0 with slice 0 = x[0, ::2] given and slice 1 = x[0, 1::2];
# "depth" the same order over plane 1. So one slice of each stage is the even columns of row 0 and
# two slices are all of row 0.
@pytest.mark.parametrize("keep,expected", [
    ("top", [ROW_0, ROW_0]),
    ("planes:1", [EVERYTHING, NOTHING]),
    ("slices:1", [EVEN_COLUMNS_OF_ROW_0, EVEN_COLUMNS_OF_ROW_0]),
    ("slices:2", [ROW_0, ROW_0]),
])
def test_completion_keeps_what_it_is_given(keep, expected):
    pipeline = pipeline_of(THREE_STAGES)
    plain = pipeline.completion_masks(keep, (1, 2, 4))
    assert [m.tolist() for m in plain] == expected
    known = torch.randint(0, 4, (6, 1, 2, 4), generator=torch.Generator().manual_seed(0))
    masks = [m.expand(6, -1, -1, -1) for m in plain]
    out = pipeline.sample(6, (1, 2, 4), known=known, masks=masks, generator=torch.Generator().manual_seed(0))
    for plane, (drawn, given) in enumerate(zip(pipeline.quantizer.encode(out), pipeline.quantizer.encode(known))):
        assert torch.equal(drawn[masks[plane]], given[masks[plane]])
    assert not torch.equal(out, known)  # the rest was sampled, not copied


@pytest.mark.parametrize("keep", ["planes:2", "planes:x", "slices", "top:1", "bottom"])
def test_completion_masks_reject_unknown_keep_values(keep):
    with pytest.raises(ValueError, match=re.escape(f"keep: expected top, planes:K (K < 2) or slices:N, got {keep!r}")):
        pipeline_of(TWO_STAGES).completion_masks(keep, (1, 2, 2))


def test_sampling_arguments_after_the_image_shape_are_keyword_only():
    pipeline = pipeline_of(TWO_STAGES)
    with pytest.raises(TypeError, match="positional argument"):
        pipeline.sample(2, (1, 2, 2), {"low": 1.0})
    a = pipeline.sample(2, (1, 2, 2), temperatures={"low": 0.5}, generator=torch.Generator().manual_seed(0))
    b = pipeline.sample(2, (1, 2, 2), temperatures={"low": 0.5}, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 1, 2, 2) and torch.equal(a, b)


def test_completion_of_given_bit_planes_is_the_exact_conditional():
    """Keeping the most significant plane, the completions of one image follow
    p(low bits | high bits) of the model (chi-square over the 16 completions)."""
    pipeline = pipeline_of(TWO_STAGES)
    image = torch.tensor([[[[3, 0], [2, 1]]]])
    masks = [m.expand(4000, -1, -1, -1) for m in pipeline.completion_masks("planes:1", (1, 2, 2))]
    out = pipeline.sample(4000, (1, 2, 2), known=image.expand(4000, -1, -1, -1), masks=masks,
                          generator=torch.Generator().manual_seed(2))
    high = pipeline.quantizer.encode(image)[0]
    candidates = testing.all_images(2, 1, 2, 2)  # every low plane
    full = pipeline.quantizer.decode([high.expand(16, -1, -1, -1), candidates])
    with torch.no_grad():
        probs = pipeline.log_prob(full)["high"].double().exp()
    low = pipeline.quantizer.encode(out)[1].view(4000, -1)
    observed = torch.bincount((low * torch.tensor([8, 4, 2, 1])).sum(1), minlength=16).double()
    assert_chi_square_fits(observed, probs / probs.sum() * 4000)
