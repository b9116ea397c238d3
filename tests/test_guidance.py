"""Classifier-free guidance at sampling: each subpixel drawn from (1 + W) cond - W uncond logits,
on the fast and the reference path alike; W = 0 draws exactly the plain conditional samples."""

import pytest
import torch

from spnkit.core import build
from spnkit.core.interfaces import one_hot
from spnkit.core.sampling import gumbel_noise

LABELS = {"plugin": "class_embedding", "classes": 3, "channels": 6, "drop_labels": 0.5}
ENCODER = {"plugin": "slice_embedder", "conv_layers": 1, "channels": 12, "attention_layers": 1, "heads": 2,
           "attention_channels": 12, "residual_blocks": 1, "residual_channels": 12}


def randomized(recipe: dict) -> build.Pipeline:
    """The recipe's pipeline with every weight drawn at random (conditioners start at zero, so
    an untrained label would change nothing)."""
    pipeline = build.build_pipeline(build.validate(recipe))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in pipeline.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return pipeline.eval()


TWO_STAGES = {  # an SPN stage (slice embedder, gated PixelCNN with its fast path) over another
    "data": {"height": 4, "width": 4, "channels": 2, "bits": 3},
    "quantizer": {"plugin": "depth_split", "splits": [1, 2]},
    "stages": {
        "low": {"plane": 0, "ordering": {"plugin": "subscale", "factor": 2}, "encoder": ENCODER, "conditioner": LABELS,
                "decoder": {"plugin": "gated_pixelcnn", "layers": 2, "channels": 12, "residual_channels": 12}},
        "high": {"plane": 1, "conditions_on": ["low"], "ordering": {"plugin": "subscale", "factor": 2},
                 "encoder": ENCODER, "conditioner": LABELS,
                 "decoder": {"plugin": "hybrid", "transformer": {"layers": 1, "heads": 2, "channels": 12},
                             "pixelcnn": {"layers": 1, "channels": 12, "residual_channels": 12}}},
    },
}


def sample(pipeline, reference=False, **options):
    generator = torch.Generator().manual_seed(11)
    side = torch.tensor([0, 1, 2, 0, 1, 2])
    return pipeline.sample(6, (2, 4, 4), generator=generator, reference=reference, side=side, **options)


@pytest.mark.parametrize("reference", [False, True])
def test_guidance_zero_draws_the_plain_conditional_samples(reference):
    pipeline = randomized(TWO_STAGES)
    assert torch.equal(sample(pipeline, reference, guidance=0.0), sample(pipeline, reference))


def test_guided_fast_path_draws_what_the_reference_path_draws():
    pipeline = randomized(TWO_STAGES)
    fast, slow = sample(pipeline, guidance=2.5), sample(pipeline, reference=True, guidance=2.5)
    assert torch.equal(fast, slow)
    assert not torch.equal(fast, sample(pipeline))  # and guidance changes what is drawn


def test_each_subpixel_is_the_argmax_of_the_guided_logits():
    recipe = {"data": {"height": 3, "width": 3, "channels": 1, "bits": 3},
              "quantizer": {"plugin": "depth_split", "splits": [3]},
              "stages": {"main": {"decoder": {"plugin": "pixelcnn", "layers": 2, "channels": 12, "head_channels": 12},
                                  "conditioner": LABELS}}}
    pipeline = randomized(recipe)
    stage, weight = pipeline.stages["main"], 1.5
    labels = torch.tensor([0, 1, 2, 2])
    x = stage.sample(4, generator=torch.Generator().manual_seed(3), side=labels, guidance=weight)
    noise = gumbel_noise((4, 1, 8, 1, 3, 3), torch.Generator().manual_seed(3))[:, 0]  # [B, L, C, h, w]
    with torch.no_grad():  # teacher-forced on the drawn image: subpixel t sees only those before it
        cond = stage.logits(one_hot(x, 8), side=labels)
        uncond = stage.logits(one_hot(x, 8), side=torch.full_like(labels, -1))
    guided = (1 + weight) * cond - weight * uncond
    assert torch.equal(x, (guided + noise).argmax(dim=1))
    assert not torch.equal(x, (cond + noise).argmax(dim=1))


def test_guidance_needs_a_no_label_row():
    recipe = {**TWO_STAGES, "stages": {name: {**stage, "conditioner": {**LABELS, "null_class": False,
                                                                        "drop_labels": 0.0}}
                                       for name, stage in TWO_STAGES["stages"].items()}}
    with pytest.raises(ValueError, match="null_class = false"):
        sample(randomized(recipe), guidance=1.0)
