"""Fast (cached) sampling draws exactly what the reference path draws, for every built-in
decoder and for whole pipelines."""

import itertools

import pytest
import torch

from fixtures import DenseEncoder, DenseEncoderOptions, DenseMaskedDecoder, DenseOptions
from spnkit.builtin.embedder import SliceEmbedder, SliceEmbedderOptions
from spnkit.builtin.orderings import SubscaleOptions, SubscaleOrdering
from spnkit.builtin.pixelcnn import PixelCNN, PixelCNNOptions
from spnkit.nn.gated import GatedPixelCNN, GatedPixelCNNOptions
from spnkit.builtin.transformer import Hybrid, HybridOptions, MaskedTransformer, MaskedTransformerOptions
from spnkit.core import build
from spnkit.core.interfaces import EncoderSpec, SliceSpec, one_hot
from spnkit.core.sampling import PixelInputs, draw, gumbel_noise
from spnkit.core.system import AutoregressiveStage

ATTENTION = MaskedTransformerOptions(layers=2, heads=2, channels=8)
GATED = GatedPixelCNNOptions(layers=3, filter_size=3, channels=6, residual_channels=6)
DECODERS = {
    "pixelcnn": lambda spec: PixelCNN(PixelCNNOptions(layers=2, channels=6, head_channels=6), spec),
    "gated_pixelcnn": lambda spec: GatedPixelCNN(GATED, spec),
    "gated_pixelcnn_k5": lambda spec: GatedPixelCNN(GatedPixelCNNOptions(layers=2, filter_size=5, channels=6,
                                                                          residual_channels=6), spec),
    "masked_transformer": lambda spec: MaskedTransformer(ATTENTION, spec),
    "hybrid": lambda spec: Hybrid(HybridOptions(ATTENTION, GATED), spec),
}


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("channels,context", [(1, 0), (3, 0), (3, 5)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_path_draws_what_the_reference_draws(name, channels, context, dtype):
    torch.manual_seed(0)
    spec = SliceSpec(channels, 5, 6, 8, context)
    decoder = DECODERS[name](spec).to(dtype).eval()
    noise = gumbel_noise((4, 8, channels, 5, 6), torch.Generator().manual_seed(1), dtype=dtype)
    ctx = torch.randn(4, context, 5, 6, dtype=dtype) if context else None
    with torch.no_grad():
        fast = decoder.sample(noise, context=ctx, temperature=0.9)
        assert torch.equal(fast, decoder.sample_reference(noise, context=ctx, temperature=0.9))


@pytest.mark.parametrize("name", DECODERS)
def test_fast_path_keeps_given_subpixels_like_the_reference(name):
    torch.manual_seed(0)
    decoder = DECODERS[name](SliceSpec(3, 4, 4, 4)).double().eval()
    noise = gumbel_noise((3, 4, 3, 4, 4), torch.Generator().manual_seed(2), dtype=torch.float64)
    given = torch.full((3, 3, 4, 4), -1)
    given[:, :, :2] = torch.randint(0, 4, (3, 3, 2, 4))
    with torch.no_grad():
        fast = decoder.sample(noise, given=given)
    assert torch.equal(fast, decoder.sample_reference(noise, given=given))
    assert torch.equal(fast[:, :, :2], given[:, :, :2])


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("context", [0, 5])
def test_cache_gives_the_forward_logits_of_each_subpixel(name, context):
    """Teacher-forced through a slice, a cache's logits of the channel about to be drawn, alone
    (``channel_logits``, what sampling reads) or among the pixel's (``pixel_logits``), are the
    forward pass's."""
    torch.manual_seed(0)
    decoder = DECODERS[name](SliceSpec(3, 4, 5, 8, context)).double().eval()
    x = torch.randint(0, 8, (2, 3, 4, 5))
    ctx = torch.randn(2, context, 4, 5, dtype=torch.float64) if context else None
    with torch.no_grad():
        expected = decoder(one_hot(x, 8, torch.float64), ctx)
        inputs = PixelInputs(torch.zeros(2, 8, 3, 4, 5, dtype=torch.float64))
        cache = decoder.sampling_cache(inputs, ctx)
        for row, col in itertools.product(range(4), range(5)):
            cache.start_pixel(row, col)
            for channel in range(3):
                want = expected[:, :, channel, row, col]
                torch.testing.assert_close(cache.channel_logits(row, col, channel), want)
                torch.testing.assert_close(cache.pixel_logits(row, col)[:, :, channel], want)
                inputs.set(row, col, channel, x[:, channel, row, col])
            if col == 4:
                cache.finish_row(row)


EMBEDDER = SliceEmbedderOptions(conv_layers=2, channels=6, attention_layers=1, heads=2, attention_channels=6,
                                residual_blocks=1, residual_channels=6)


@pytest.mark.parametrize("grid", [(2, 2), (3, 2)])
def test_slice_embedder_sampling_path_gives_forward_maps(grid):
    """Its first convolution summed by parts (filled slots as gathers of their levels, the
    conditioning and side maps once) gives ``forward``'s map for every target."""
    torch.manual_seed(0)
    spec = EncoderSpec(2, 3, 4, 4, grid, cond_levels=3, side_channels=5)
    encoder = SliceEmbedder(EMBEDDER, spec).double().eval()
    slices = torch.randint(0, 4, (2, spec.num_slices, 2, 3, 4))
    cond = one_hot(torch.randint(0, 3, (2, spec.num_slices, 2, 3, 4)), 3, torch.float64).movedim(1, 2)
    side = torch.randn(2, 5, dtype=torch.float64)
    with torch.no_grad():
        contexts = encoder.sampling_context(slices, cond, side)
        for t in range(spec.num_slices):
            expected = encoder(one_hot(slices, 4, torch.float64).movedim(1, 2), torch.full((2,), t), cond, side)
            torch.testing.assert_close(contexts(t), expected)


@pytest.mark.parametrize("encoder", ["slice_embedder", "dense"])
def test_stage_gives_each_slice_the_map_of_the_slices_drawn_before_it(encoder):
    """``AutoregressiveStage.sample`` gives the decoder, for slice ``t``, the encoder's map of the
    slices drawn before it: from the encoder's own sampling path (the slice embedder's), or from
    ``forward`` on the one-hot of the slices that the stage keeps up to date."""
    torch.manual_seed(0)
    ordering = SubscaleOrdering(SubscaleOptions(2))
    spec = EncoderSpec(2, 3, 3, 4, (2, 2))
    encoder = SliceEmbedder(EMBEDDER, spec) if encoder == "slice_embedder" else DenseEncoder(DenseEncoderOptions(), spec)
    decoder = DECODERS["hybrid"](SliceSpec(2, 3, 3, 4, encoder.out_channels))
    stage = AutoregressiveStage(ordering, decoder, encoder, (2, 6, 6), 4).double().eval()
    contexts, sample = [], decoder.sample
    decoder.sample = lambda noise, **kwargs: contexts.append(kwargs["context"]) or sample(noise, **kwargs)
    slices = ordering.to_slices(stage.sample(2, generator=torch.Generator().manual_seed(6)))  # [B, N, C, h, w]
    with torch.no_grad():
        for t, context in enumerate(contexts):
            expected = encoder(one_hot(slices, 4, torch.float64).movedim(1, 2), torch.full((2,), t))
            torch.testing.assert_close(context, expected)


def test_reference_path_is_one_full_forward_pass_per_subpixel():
    torch.manual_seed(0)
    spec = SliceSpec(3, 3, 4, 4, 2)
    decoder = DECODERS["gated_pixelcnn"](spec).double().eval()
    noise = gumbel_noise((2, 4, 3, 3, 4), torch.Generator().manual_seed(3), dtype=torch.float64)
    context = torch.randn(2, 2, 3, 4, dtype=torch.float64)
    x = torch.zeros(2, 3, 3, 4, dtype=torch.long)
    with torch.no_grad():
        for row, col, channel in itertools.product(range(3), range(4), range(3)):
            logits = decoder(one_hot(x, 4, torch.float64), context)[:, :, channel, row, col]
            x[:, channel, row, col] = draw(logits, noise[:, :, channel, row, col], 0.8)
        assert torch.equal(decoder.sample_reference(noise, context=context, temperature=0.8), x)


def test_decoders_without_a_cache_sample_by_the_reference_path():
    torch.manual_seed(0)
    decoder = DenseMaskedDecoder(DenseOptions(), SliceSpec(2, 2, 3, 3))
    assert decoder.sampling_cache(PixelInputs(torch.zeros(1, 3, 2, 2, 3)), None) is None
    noise = gumbel_noise((4, 3, 2, 2, 3), torch.Generator().manual_seed(4))
    assert torch.equal(decoder.sample(noise, temperature=0.9), decoder.sample_reference(noise, temperature=0.9))


def test_whole_pipeline_fast_equals_reference():
    """The quickstart's structure (depth split, subscale, slice embedder, hybrid) at tiny widths."""
    overrides = [
        "data.height=8", "data.width=8",
        "stages.low.encoder={plugin='slice_embedder', conv_layers=1, channels=4, attention_layers=1, heads=1, "
        "attention_channels=4, residual_blocks=1, residual_channels=4}",
        "stages.high.encoder={plugin='slice_embedder', conv_layers=1, channels=4, attention_layers=1, heads=1, "
        "attention_channels=4, residual_blocks=1, residual_channels=4}",
        "stages.low.decoder={plugin='hybrid', transformer={layers=1, heads=1, channels=4}, "
        "pixelcnn={layers=2, channels=4, residual_channels=4}}",
        "stages.high.decoder={plugin='hybrid', transformer={layers=1, heads=1, channels=4}, "
        "pixelcnn={layers=2, channels=4, residual_channels=4}}",
    ]
    resolved = build.load("recipes/quickstart.toml", overrides)
    torch.manual_seed(0)
    pipeline = build.build_pipeline(resolved).double().eval()
    temperatures = {"low": 0.99, "high": 1.0}
    fast = pipeline.sample(3, (1, 8, 8), temperatures=temperatures, generator=torch.Generator().manual_seed(5))
    reference = pipeline.sample(3, (1, 8, 8), temperatures=temperatures, generator=torch.Generator().manual_seed(5),
                                reference=True)
    assert torch.equal(fast, reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: checks the fast path on the device")
@pytest.mark.parametrize("name", DECODERS)
def test_fast_path_on_cuda_draws_what_the_reference_draws(name):
    """In float64: in float32 the GPU's TF32 convolutions and fused attention kernels round
    windowed and whole-slice computations differently, so near-ties may be drawn differently."""
    torch.manual_seed(0)
    decoder = DECODERS[name](SliceSpec(3, 5, 6, 8, 5)).cuda().double().eval()
    noise = gumbel_noise((4, 8, 3, 5, 6), torch.Generator().manual_seed(1), dtype=torch.float64, device="cuda")
    context = torch.randn(4, 5, 5, 6, device="cuda", dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(decoder.sample(noise, context=context), decoder.sample_reference(noise, context=context))
