"""Whole pipelines: exact normalization over a partition of the variables, and samples that
agree with the model's probabilities."""

import pytest
import torch

from spnkit import build, testing

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
    observed = torch.bincount(index, minlength=len(images)).double()
    expected = probs * len(draws)
    keep = expected >= 5  # pool the rare images into one bin, as the test requires
    chi2 = (((observed[keep] - expected[keep]) ** 2) / expected[keep]).sum()
    rest_o, rest_e = observed[~keep].sum(), expected[~keep].sum()
    if rest_e > 0:
        chi2 += (rest_o - rest_e) ** 2 / rest_e
    dof = int(keep.sum()) + int(rest_e > 0) - 1
    # the 0.999 quantile of chi-square is below dof + 3.3 * sqrt(2 dof) + 10 for these dof
    assert chi2 < dof + 3.3 * (2 * dof) ** 0.5 + 10, (chi2.item(), dof)


def test_completion_keeps_the_given_subpixels():
    pipeline = pipeline_of(THREE_STAGES)
    known = torch.randint(0, 4, (5, 1, 2, 4))
    mask = torch.zeros_like(known, dtype=torch.bool)
    mask[..., 0, :] = True
    out = pipeline.sample(5, (1, 2, 4), known=known, mask=mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[..., 0, :], known[..., 0, :])
