"""Every built-in decoder and the slice embedder, joined into full stages, pass the kit:
exact normalization on tiny shapes and zero gradient leaks."""

import pytest
import torch

from spnkit import testing
from spnkit.builtin.embedder import SliceEmbedder, SliceEmbedderOptions
from spnkit.builtin.orderings import RasterOrdering, SubscaleOptions, SubscaleOrdering
from spnkit.builtin.pixelcnn import PixelCNN, PixelCNNOptions
from spnkit.nn.gated import GatedPixelCNN, GatedPixelCNNOptions
from spnkit.builtin.transformer import Hybrid, HybridOptions, MaskedTransformer, MaskedTransformerOptions
from spnkit.core.interfaces import EncoderSpec, NoOptions, SliceSpec
from spnkit.core.system import AutoregressiveStage

ATTENTION = MaskedTransformerOptions(layers=1, heads=2, channels=6)
GATED = GatedPixelCNNOptions(layers=2, channels=6, residual_channels=6)
DECODERS = {
    "pixelcnn": lambda spec: PixelCNN(PixelCNNOptions(layers=1, channels=6, head_channels=6), spec),
    "gated_pixelcnn": lambda spec: GatedPixelCNN(GATED, spec),
    "masked_transformer": lambda spec: MaskedTransformer(ATTENTION, spec),
    "hybrid": lambda spec: Hybrid(HybridOptions(ATTENTION, GATED), spec),
}
EMBEDDER = SliceEmbedderOptions(conv_layers=1, channels=6, attention_layers=1, heads=2, attention_channels=6,
                                residual_blocks=1, residual_channels=6)


def stage(decoder: str, channels: int, size: tuple[int, int], factor: int, levels: int, cond_levels: int,
          given: int = 0) -> AutoregressiveStage:
    torch.manual_seed(0)
    ordering = RasterOrdering(NoOptions()) if factor == 1 else SubscaleOrdering(SubscaleOptions(factor))
    h, w = ordering.slice_shape(*size)
    encoder = None
    if factor > 1 or cond_levels:
        encoder = SliceEmbedder(EMBEDDER, EncoderSpec(channels, h, w, levels, ordering.grid(*size), cond_levels))
    spec = SliceSpec(channels, h, w, levels, encoder.out_channels if encoder else 0)
    return AutoregressiveStage(ordering, DECODERS[decoder](spec), encoder, (channels, *size), levels, cond_levels, given)


SHAPES = [
    # channels, size, factor, levels, cond_levels
    (1, (2, 2), 1, 2, 0),   # raster, grayscale
    (3, (1, 2), 1, 2, 0),   # raster, RGB
    (1, (2, 4), 2, 2, 0),   # subscale, grayscale, non-square
    (3, (2, 2), 2, 2, 0),   # subscale, RGB
    (1, (2, 2), 2, 2, 4),   # subscale with depth conditioning
    (3, (2, 2), 2, 2, 2),   # subscale, RGB, depth conditioning
]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"C{s[0]}-{s[1][0]}x{s[1][1]}-S{s[2]}-cond{s[4]}")
def test_stage_normalizes_and_does_not_leak(decoder, shape):
    channels, size, factor, levels, cond_levels = shape
    built = stage(decoder, channels, size, factor, levels, cond_levels)
    cond = torch.randint(0, cond_levels, (1, channels, *size)) if cond_levels else None
    testing.check_stage_normalization(built, cond)
    testing.check_stage_causality(built, cond)


@pytest.mark.parametrize("decoder", ["gated_pixelcnn", "hybrid"])
def test_size_upscaling_stage_with_a_given_first_slice(decoder):
    built = stage(decoder, 1, (2, 4), 2, 3, 0, given=1)
    prefix = torch.randint(0, 3, (1, 1, 2, 4))
    testing.check_stage_normalization(built, prefix=prefix)
    testing.check_stage_causality(built)


def test_larger_spn_stage_has_no_leak():
    """A 3-channel 8x8 stage with S = 2 (4x4 slices) and depth conditioning, subpixels sampled."""
    built = stage("hybrid", 3, (8, 8), 2, 4, 8)
    cond = torch.randint(0, 8, (1, 3, 8, 8))
    testing.check_stage_causality(built, cond, max_subpixels=40)
