"""Class-conditional stages (Gated PixelCNN's p(x | h), van den Oord et al. 2016c): exact for
every label, the label reaches the encoder and the decoder, causality and fast sampling hold,
recipes validate their conditioners, pipelines pass labels to every stage."""

import re

import pytest
import torch

from spnkit.core import build

from spnkit import cli, testing
from spnkit.builtin.conditioners import (
    ClassEmbedding,
    ClassEmbeddingOptions,
    Vector,
    VectorOptions,
)
from spnkit.builtin.embedder import SliceEmbedder, SliceEmbedderOptions
from spnkit.builtin.orderings import RasterOrdering, SubscaleOptions, SubscaleOrdering
from spnkit.nn.gated import GatedPixelCNN, GatedPixelCNNOptions
from spnkit.builtin.transformer import (
    Hybrid,
    HybridOptions,
    MaskedTransformer,
    MaskedTransformerOptions,
)
from spnkit.core.interfaces import EncoderSpec, NoOptions, SideInfo, SliceSpec, one_hot
from spnkit.core.recipe import RecipeError
from spnkit.core.system import AutoregressiveStage

CLASSES = 3
LABELS = torch.tensor([0, 1, 2, -1])  # every class, then "no label"
ATTENTION = MaskedTransformerOptions(layers=1, heads=2, channels=12)
GATED = GatedPixelCNNOptions(layers=2, channels=12, residual_channels=12)
EMBEDDER = SliceEmbedderOptions(conv_layers=1, channels=12, attention_layers=1, heads=2, attention_channels=12,
                                residual_blocks=1, residual_channels=12)
DECODERS = {
    "gated_pixelcnn": lambda spec: GatedPixelCNN(GATED, spec),
    "masked_transformer": lambda spec: MaskedTransformer(ATTENTION, spec),
    "hybrid": lambda spec: Hybrid(HybridOptions(ATTENTION, GATED), spec),
}
MISSING_SIDE = "pass side (labels [B] or vectors [B, K])"


def labels_conditioner(null_class=True, classes=CLASSES):
    return ClassEmbedding(ClassEmbeddingOptions(classes=classes, channels=4, null_class=null_class))


def make_stage(decoder="gated_pixelcnn", factor=2, size=(2, 4), levels=2, cond_levels=0, conditioner=None):
    """A 1-channel stage with a conditioner (3 labels by default); no encoder when ``factor == 1``.
    The conditioner's weights are drawn at random, as after training (they start at zero)."""
    torch.manual_seed(0)
    conditioner = conditioner or labels_conditioner()
    for parameter in conditioner.parameters():
        torch.nn.init.normal_(parameter)
    ordering = SubscaleOrdering(SubscaleOptions(factor)) if factor > 1 else RasterOrdering(NoOptions())
    h, w = ordering.slice_shape(*size)
    side = conditioner.out_channels
    encoder = None
    if factor > 1:
        encoder = SliceEmbedder(EMBEDDER, EncoderSpec(1, h, w, levels, ordering.grid(*size), cond_levels, side))
    context = (encoder.out_channels if encoder is not None else 0) + side
    stage = AutoregressiveStage(ordering, DECODERS[decoder](SliceSpec(1, h, w, levels, context)), encoder,
                                (1, *size), levels, cond_levels, conditioner=conditioner)
    return stage.double().eval()


def all_differ(values: torch.Tensor) -> bool:
    gaps = (values.view(-1, 1) - values.view(1, -1)).abs() + torch.eye(len(values), dtype=values.dtype)
    return bool((gaps > 1e-6).all())


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("decoder", ["gated_pixelcnn", "hybrid"])
def test_conditional_stage_normalizes_for_every_label(decoder):
    """Subscale S=2 on 2x4 binary images: all 256 images, for each of 3 labels and "no label"."""
    testing.check_stage_normalization(make_stage(decoder), side=LABELS)


def test_stage_with_depth_conditioning_normalizes_for_every_label():
    stage = make_stage("hybrid", cond_levels=2)
    cond = torch.tensor([[[[1, 0, 0, 1], [0, 1, 1, 0]]]])
    testing.check_stage_normalization(stage, cond, side=LABELS)


def test_vector_conditioned_stage_normalizes_for_each_vector():
    stage = make_stage("gated_pixelcnn", conditioner=Vector(VectorOptions(size=3, channels=4)))
    testing.check_stage_normalization(stage, side=torch.randn(2, 3, generator=torch.Generator().manual_seed(0)))


def test_normalization_check_names_the_side_value_that_fails():
    class Unnormalized(AutoregressiveStage):
        def log_prob(self, target, cond=None, side=None):
            return super().log_prob(target, cond, side) + (side == 2).double()

    good = make_stage()
    stage = Unnormalized(good.ordering, good.decoder, good.encoder, (1, 2, 4), 2, conditioner=good.conditioner)
    with pytest.raises(testing.ConformanceError, match=r"given side 2: .* sum to"):
        testing.check_stage_normalization(stage, side=LABELS)


# ----------------------------------------------------------------------------- the label matters


@pytest.mark.parametrize("decoder", DECODERS)
def test_the_label_reaches_every_decoder_through_its_context(decoder):
    """A raster stage has no encoder: the label acts through the decoder's context alone."""
    stage = make_stage(decoder, factor=1, size=(2, 2))
    x = torch.tensor([[[[1, 0], [1, 1]]]]).expand(len(LABELS), -1, -1, -1)
    assert all_differ(stage.log_prob(x, side=LABELS))


def test_the_side_vector_reaches_the_slice_embedder():
    encoder = SliceEmbedder(EMBEDDER, EncoderSpec(1, 1, 2, 2, (2, 2), side_channels=4)).double()
    slices = one_hot(torch.tensor([[[[[1, 0]]], [[[0, 1]]], [[[1, 1]]], [[[0, 0]]]]]), 2, torch.float64).movedim(1, 2)
    side = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = encoder(slices.expand(2, -1, -1, -1, -1, -1), torch.tensor([2, 2]), None, side)
    assert not torch.allclose(out[0], out[1])
    testing.check_encoder_causality(encoder)


@pytest.mark.parametrize("decoder", DECODERS)
def test_the_label_changes_a_subscale_stage(decoder):
    stage = make_stage(decoder, size=(4, 4))
    x = torch.randint(0, 2, (1, 1, 4, 4), generator=torch.Generator().manual_seed(0)).expand(len(LABELS), -1, -1, -1)
    assert all_differ(stage.log_prob(x, side=LABELS))


@pytest.mark.parametrize("conditioner, side", [
    (labels_conditioner(), LABELS),
    (Vector(VectorOptions(size=3, channels=4)), torch.randn(4, 3, generator=torch.Generator().manual_seed(0))),
])
def test_an_untrained_conditioner_gives_zero_so_every_label_starts_equal(conditioner, side):
    """h starts at 0 and still learns: the label's loss gradient reaches the conditioner."""
    assert not conditioner(side).any()
    stage = make_stage("hybrid", size=(4, 4))
    stage.conditioner = conditioner.double()
    x = torch.randint(0, 2, (1, 1, 4, 4), generator=torch.Generator().manual_seed(0)).expand(len(side), -1, -1, -1)
    log_prob = stage.log_prob(x, side=side)
    assert torch.allclose(log_prob, log_prob[0].expand_as(log_prob))
    log_prob.sum().backward()
    assert all(parameter.grad.abs().sum() > 0 for parameter in conditioner.parameters())


def test_drop_labels_trains_the_no_label_row_and_never_drops_outside_training():
    conditioner = ClassEmbedding(ClassEmbeddingOptions(classes=CLASSES, channels=4, drop_labels=0.25))
    torch.nn.init.normal_(conditioner.embedding.weight)
    labels = torch.arange(CLASSES).repeat(4000)
    null_row = conditioner.embedding.weight[CLASSES]
    torch.manual_seed(0)
    dropped = (conditioner(labels) == null_row).all(dim=1).float().mean().item()
    assert abs(dropped - 0.25) < 0.02
    conditioner.eval()
    assert torch.equal(conditioner(labels), conditioner.embedding.weight[labels])


# ----------------------------------------------------------------------------- causality, sampling


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("factor", [1, 2])
def test_conditional_stage_is_causal(decoder, factor):
    testing.check_stage_causality(make_stage(decoder, factor, size=(4, 4)).float(), side=torch.tensor([1]))


@pytest.mark.parametrize("decoder", DECODERS)
def test_fast_sampling_draws_what_the_reference_draws_given_labels(decoder):
    stage = make_stage(decoder, size=(4, 4), levels=4)
    labels = torch.tensor([0, 2, -1])
    fast = stage.sample(3, generator=torch.Generator().manual_seed(1), side=labels)
    reference = stage.sample(3, generator=torch.Generator().manual_seed(1), reference=True, side=labels)
    assert torch.equal(fast, reference)


# ----------------------------------------------------------------------------- errors


def test_out_of_range_label_is_a_value_error_naming_it():
    stage = make_stage(conditioner=labels_conditioner(classes=10))
    x = torch.zeros(2, 1, 2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^label 12 is out of range for 10 classes$"):
        stage.log_prob(x, side=torch.tensor([3, 12]))
    with pytest.raises(ValueError, match=r"^label -2 is out of range for 10 classes$"):
        stage.sample(2, side=torch.tensor([-2, 0]))


def test_no_label_needs_the_null_class():
    stage = make_stage(conditioner=labels_conditioner(null_class=False))
    x = torch.zeros(2, 1, 2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^label -1 is out of range for 3 classes \(null_class = false"):
        stage.log_prob(x, side=torch.tensor([-1, 0]))
    testing.check_stage_normalization(stage, side=torch.tensor([0, 1, 2]))


def test_missing_side_is_a_value_error():
    stage = make_stage()
    x = torch.zeros(2, 1, 2, 4, dtype=torch.long)
    for call in (lambda: stage.log_prob(x), lambda: stage.loss(x), lambda: stage.sample(2)):
        with pytest.raises(ValueError, match=re.escape(f"this stage is conditional: {MISSING_SIDE}")):
            call()


@pytest.mark.parametrize("conditioner,side,expected", [
    (labels_conditioner(), torch.tensor([0.0, 1.0]), "side: expected labels [2] int64, got [2] torch.float32"),
    (labels_conditioner(), torch.tensor([0, 1, 2]), "side: expected labels [2] int64, got [3] torch.int64"),
    (Vector(VectorOptions(size=3)), torch.zeros(2, 4), "side: expected vectors [2, 3] float, got [2, 4] torch.float32"),
])
def test_side_of_the_wrong_shape_or_dtype_is_a_value_error(conditioner, side, expected):
    stage = make_stage(conditioner=conditioner)
    with pytest.raises(ValueError, match=re.escape(expected)):
        stage.log_prob(torch.zeros(2, 1, 2, 4, dtype=torch.long), side=side)


def test_hand_built_stage_must_give_the_decoder_room_for_the_side_vector():
    good = make_stage(factor=1, size=(2, 2))
    decoder = GatedPixelCNN(GATED, SliceSpec(1, 2, 2, 2))
    with pytest.raises(ValueError, match="context_channels is 0, but the encoder and conditioner give 4"):
        AutoregressiveStage(good.ordering, decoder, None, (1, 2, 2), 2, conditioner=good.conditioner)


# ----------------------------------------------------------------------------- recipes and pipelines


def recipe(low=None, high=None) -> dict:
    """Two stages on 2x2 2-bit images, each conditioned on 3 labels unless given another
    conditioner table (``{}``: none)."""
    labels = {"plugin": "class_embedding", "classes": CLASSES, "channels": 4}
    stage = {
        "ordering": {"plugin": "subscale", "factor": 2},
        "encoder": {"plugin": "slice_embedder", "conv_layers": 1, "channels": 12, "attention_layers": 1, "heads": 2,
                    "attention_channels": 12, "residual_blocks": 1, "residual_channels": 12},
        "decoder": {"plugin": "hybrid", "transformer": {"layers": 1, "heads": 2, "channels": 12},
                    "pixelcnn": {"layers": 2, "channels": 12, "residual_channels": 12}},
    }
    stages = {"low": {**stage, "plane": 0}, "high": {**stage, "plane": 1, "conditions_on": ["low"]}}
    for name, conditioner in (("low", low), ("high", high)):
        if conditioner != {}:
            stages[name]["conditioner"] = conditioner or labels
    return {
        "data": {"height": 2, "width": 2, "channels": 1, "bits": 2},
        "quantizer": {"plugin": "depth_split", "splits": [1, 1]},
        "stages": stages,
    }


def problems_of(raw: dict) -> str:
    with pytest.raises(RecipeError) as info:
        build.validate(raw)
    return "\n".join(info.value.problems)


def test_recipe_with_a_class_embedding_validates_and_builds():
    resolved = build.validate(recipe(low={"plugin": "class_embedding", "classes": 10}, high={}))
    assert resolved.side == SideInfo("labels", 10) and resolved.classes == 10
    assert resolved.to_dict()["stages"]["low"]["conditioner"] == {
        "plugin": "class_embedding", "classes": 10, "channels": 32, "null_class": True,
        "drop_labels": 0.0}
    assert "conditioner" not in resolved.to_dict()["stages"]["high"]
    stage = build.build_stage(resolved, "low")
    assert isinstance(stage.conditioner, ClassEmbedding) and stage.encoder.spec.side_channels == 32
    assert stage.decoder.spec.context_channels == stage.encoder.out_channels + 32
    assert build.build_stage(resolved, "high").conditioner is None


def test_side_of_vector_and_unconditional_recipes():
    vector = {"plugin": "vector", "size": 5}
    resolved = build.validate(recipe(low=vector, high=vector))
    assert resolved.side == SideInfo("vectors", 5) and resolved.classes is None
    assert build.validate(recipe(low={}, high={})).side is None


@pytest.mark.parametrize("low,high,expected", [
    ({"plugin": "class_embedding", "clases": 10}, None,
     "stages.low.conditioner.clases: unknown key; did you mean 'classes'?"),
    ({"plugin": "class_embedding"}, None, "stages.low.conditioner.classes: required key missing"),
    ({"plugin": "class_embedding", "classes": 0}, None, "stages.low.conditioner.classes: must be in [1, 1048576], got 0"),
    ({"plugin": "class_embedding", "classes": 3, "null_class": "no"}, None,
     "stages.low.conditioner.null_class: expected bool, got str 'no'"),
    ({"plugin": "class_embedding", "classes": 3, "drop_labels": 1.5}, None,
     "stages.low.conditioner.drop_labels: must be in [0.0, 1.0], got 1.5"),
    ({"plugin": "class_embedding", "classes": 3, "null_class": False, "drop_labels": 0.1}, None,
     "stages.low.conditioner.drop_labels: needs null_class = true (a 'no label' row to drop to), got 0.1"),
    ({"plugin": "class_embeding", "classes": 3}, None,
     "stages.low.conditioner.plugin: unknown conditioner 'class_embeding'; did you mean 'class_embedding'?"),
    (None, {"plugin": "class_embedding", "classes": 5},
     "stages.high.conditioner.classes: takes labels of 5 classes, but stage 'low' takes labels of 3 classes"),
    (None, {"plugin": "vector", "size": 3},
     "stages.high.conditioner: takes vectors of size 3, but stage 'low' takes labels of 3 classes"),
])
def test_bad_conditioner_tables_name_the_field(low, high, expected):
    assert expected in problems_of(recipe(low, high))


def test_cli_lists_the_conditioners(capsys):
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^conditioner\s+class_embedding\s+spnkit", out, re.MULTILINE)
    assert re.search(r"^conditioner\s+vector\s+spnkit", out, re.MULTILINE)


def conditional_pipeline(**tables):
    """A built pipeline whose conditioners' weights are drawn at random, as after training."""
    torch.manual_seed(0)
    pipeline = build.build_pipeline(build.validate(recipe(**tables))).double().eval()
    for stage in pipeline.stages.values():
        for parameter in stage.conditioner.parameters() if stage.conditioner is not None else ():
            torch.nn.init.normal_(parameter)
    return pipeline


def test_conditional_pipeline_normalizes_for_every_label_as_a_sum_of_its_stages():
    pipeline = conditional_pipeline()
    images = testing.all_images(4, 1, 2, 2)
    planes = pipeline.quantizer.encode(images)
    totals = []
    for label in LABELS:
        side = label.expand(len(images))
        per_stage = pipeline.log_prob(images, side)
        for name, stage in pipeline.stages.items():
            assert torch.equal(per_stage[name], stage.log_prob(*pipeline.stage_inputs(name, planes), side))
        total = sum(per_stage.values())
        assert abs(torch.logsumexp(total, 0).exp().item() - 1) < 1e-6
        bits = sum(pipeline.bits_per_dim(images, side).values())
        assert torch.allclose(bits, -total / (4 * torch.log(torch.tensor(2.0, dtype=torch.float64))))
        totals.append(total[5])
    assert all_differ(torch.stack(totals))


def test_conditional_pipeline_samples_given_labels():
    pipeline = conditional_pipeline(high={})
    drawn = pipeline.sample(4, (1, 2, 2), generator=torch.Generator().manual_seed(3), side=LABELS)
    assert drawn.shape == (4, 1, 2, 2) and 0 <= drawn.min() and drawn.max() < 4
    reference = pipeline.sample(4, (1, 2, 2), generator=torch.Generator().manual_seed(3), reference=True, side=LABELS)
    assert torch.equal(drawn, reference)
    with pytest.raises(ValueError, match=re.escape(f"stage 'low' is conditional: {MISSING_SIDE}")):
        pipeline.sample(4, (1, 2, 2))
    with pytest.raises(ValueError, match=re.escape(f"stage 'low' is conditional: {MISSING_SIDE}")):
        pipeline.log_prob(torch.zeros(1, 1, 2, 2, dtype=torch.long))


def test_a_tiled_side_vector_is_mapped_once_per_image_with_the_convolution_s_values_and_gradients():
    from spnkit.nn.masked_conv import Conv1x1

    torch.manual_seed(0)
    conv = Conv1x1(5, 7)
    side = torch.randn(3, 5, requires_grad=True)
    tiled = side.view(3, 5, 1, 1).expand(-1, -1, 4, 6)  # how stages hand h to decoders
    fast = conv(tiled)
    assert fast.stride()[2:] == (0, 0)  # mapped once per image, not per position
    weights = torch.randn(3, 7, 4, 6)
    (fast * weights).sum().backward()
    fast_grads = [side.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone()]
    side.grad = conv.weight.grad = conv.bias.grad = None
    full = torch.nn.functional.conv2d(tiled.contiguous(), conv.weight, conv.bias)
    (full * weights).sum().backward()
    torch.testing.assert_close(fast, full)
    for got, expected in zip(fast_grads, [side.grad, conv.weight.grad, conv.bias.grad]):
        torch.testing.assert_close(got, expected)
