"""The PixelCNN Auto-Encoder: an ``image_encoder`` conditioner codes the stage's own input, the
decoder models ``p(x | code)``, trained end to end."""

import pytest
import torch

from spnkit import testing
from spnkit.core import build
from test_guidance import randomized  # every weight at random, so the code matters

CODE = {"plugin": "image_encoder", "bottleneck": 3, "channels": 6, "layers": 1}
GATED = {"plugin": "gated_pixelcnn", "layers": 2, "channels": 12, "residual_channels": 12}
ENCODER = {"plugin": "slice_embedder", "conv_layers": 1, "channels": 12, "attention_layers": 1, "heads": 2,
           "attention_channels": 12, "residual_blocks": 1, "residual_channels": 12}

ONE_STAGE = {  # a gated PixelCNN over a raster-ordered 2x2 grey image of 2 bits, given its code
    "data": {"height": 2, "width": 2, "channels": 1, "bits": 2},
    "quantizer": {"plugin": "depth_split", "splits": [2]},
    "stages": {"main": {"plane": 0, "ordering": {"plugin": "raster"}, "decoder": GATED, "conditioner": CODE}},
}

TWO_STAGES = {  # an SPN over 4x4, 2-channel images: 1 bit given its code, 2 more bits given theirs
    "data": {"height": 4, "width": 4, "channels": 2, "bits": 3},
    "quantizer": {"plugin": "depth_split", "splits": [1, 2]},
    "stages": {
        "low": {"plane": 0, "ordering": {"plugin": "subscale", "factor": 2}, "encoder": ENCODER, "conditioner": CODE,
                "decoder": GATED},
        "high": {"plane": 1, "conditions_on": ["low"], "ordering": {"plugin": "subscale", "factor": 2},
                 "encoder": ENCODER, "conditioner": CODE,
                 "decoder": {"plugin": "hybrid", "transformer": {"layers": 1, "heads": 2, "channels": 12},
                             "pixelcnn": {"layers": 1, "channels": 12, "residual_channels": 12}}},
    },
}


def images(count: int, shape=(2, 4, 4), levels: int = 8, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, levels, (count, *shape), generator=torch.Generator().manual_seed(seed))


def test_the_training_loss_reaches_every_weight_of_the_encoder():
    """The code starts at 0 (its linear map at zero), so the first step moves that map, and from
    the second on the loss reaches the convolutions too."""
    pipeline = build.build_pipeline(build.validate(TWO_STAGES))  # as training starts: default initialisation
    planes = pipeline.quantizer.encode(images(4))

    def gradients(stage, inputs) -> dict[str, torch.Tensor]:
        stage.zero_grad()
        stage.loss(*inputs, uniform=torch.full((4,), 0.6)).backward()
        return {key: p.grad for key, p in stage.conditioner.named_parameters()}

    for name, stage in pipeline.stages.items():
        stage.train()
        inputs = pipeline.stage_inputs(name, planes)
        assert torch.count_nonzero(stage.conditioner.side_of(inputs[0])) == 0  # h = 0 at first
        first = gradients(stage, inputs)
        assert first["linear.weight"].abs().sum() > 0, f"{name}: the code's linear map gets no gradient"
        torch.optim.Adam(stage.parameters(), lr=1e-3).step()
        for key, grad in gradients(stage, inputs).items():
            assert grad is not None and grad.abs().sum() > 0, f"{name}: {key} gets no gradient"


def test_probabilities_sum_to_one_for_any_fixed_code():
    stage = randomized(ONE_STAGE).stages["main"]
    codes = torch.randn(3, 3, generator=torch.Generator().manual_seed(1)) * 2
    testing.check_stage_normalization(stage, side=codes)


def test_the_code_changes_the_probabilities():
    stage = randomized(ONE_STAGE).stages["main"]
    x = images(1, (1, 2, 2), 4)
    assert not torch.allclose(stage.log_prob(x, side=torch.zeros(1, 3)), stage.log_prob(x, side=torch.ones(1, 3)))


def test_without_side_a_stage_is_given_the_code_of_its_own_input():
    pipeline = randomized(TWO_STAGES)
    x = images(5)
    codes = pipeline.encode(x)
    assert set(codes) == {"low", "high"} and codes["low"].shape == (5, 3)
    own, given = pipeline.log_prob(x), pipeline.log_prob(x, side=codes)
    for name in own:
        torch.testing.assert_close(own[name], given[name])


@pytest.mark.parametrize("recipe", [ONE_STAGE, TWO_STAGES], ids=["gated", "spn"])
def test_fast_sampling_draws_what_the_reference_path_draws_given_a_code(recipe):
    pipeline = randomized(recipe)
    data = recipe["data"]
    shape = (data["channels"], data["height"], data["width"])
    codes = pipeline.encode(images(6, shape, 2 ** data["bits"]))

    def draw(reference):
        generator = torch.Generator().manual_seed(11)
        return pipeline.sample(6, shape, generator=generator, reference=reference, side=codes)

    fast = draw(False)
    assert torch.equal(fast, draw(True))
    other = {name: code + 3 for name, code in codes.items()}
    assert not torch.equal(fast, pipeline.sample(6, shape, generator=torch.Generator().manual_seed(11), side=other))


def test_sampling_without_a_code_names_what_to_pass():
    pipeline = randomized(ONE_STAGE)
    with pytest.raises(ValueError, match=r"stage 'main' is conditioned on the code of its input image.*codes \[B, 3\]"):
        pipeline.sample(2, (1, 2, 2))
    with pytest.raises(ValueError, match=r"expected codes \[2, 3\] float"):
        pipeline.sample(2, (1, 2, 2), side=torch.zeros(2, 4))


def test_a_recipe_mixing_codes_with_labels_is_refused_naming_the_stage():
    mixed = {**TWO_STAGES, "stages": {**TWO_STAGES["stages"], "low": {
        **TWO_STAGES["stages"]["low"], "conditioner": {"plugin": "class_embedding", "classes": 3}}}}
    with pytest.raises(build.RecipeError) as error:
        build.validate(mixed)
    assert str(error.value).endswith("stages.high.conditioner: a stage given the code of its own input cannot share a "
                                     "recipe with stages given labels of 3 classes (stage 'low') yet")


def test_adam_cannot_saturate_the_code_within_a_few_steps():
    """Adam moves each weight by about lr per step whatever its gradient, so an unscaled linear map
    over F features moves the code by up to lr * F per step: on 28x28 images (F = 512) 25 steps
    of the most consistent push there is left every code at +-1 (tanh saturated, no gradient)."""
    from spnkit.builtin.conditioners import ImageEncoder, ImageEncoderOptions
    from spnkit.core.interfaces import InputSpec

    torch.manual_seed(0)
    encoder = ImageEncoder(ImageEncoderOptions(bottleneck=32), InputSpec(1, 28, 28, 256))
    pictures = torch.randint(0, 256, (16, 1, 28, 28))
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    for _ in range(25):
        optimizer.zero_grad()
        (-encoder.encode(pictures).sum()).backward()  # every code pushed up, every step
        optimizer.step()
    assert encoder.encode(pictures).abs().max() < 0.9
