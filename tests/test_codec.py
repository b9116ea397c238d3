"""The codec's Python API on tiny models: exact round trips for every decoder and a 3-stage
system, decoding independent of the chunk, of which images are decoded together and of the
thread count, encoder and decoder tables equal bit for bit (and a one-ulp change caught),
sizes close to the NLL, and every kind of damaged or foreign file refused."""

import hashlib
import math
import struct

import pytest
import torch

from fixtures import DenseMaskedDecoder, DenseOptions
from spnkit import codec
from spnkit.builtin.orderings import RasterOrdering
from spnkit.builtin.quantizers import DepthSplit, DepthSplitOptions
from spnkit.codec import coding, container
from spnkit.core import build
from spnkit.core.interfaces import NoOptions, SliceSpec
from spnkit.core.system import AutoregressiveStage, Pipeline

ENCODER = {"plugin": "slice_embedder", "conv_layers": 1, "channels": 6, "attention_layers": 1, "heads": 1,
           "attention_channels": 6, "residual_blocks": 1, "residual_channels": 6}
DECODERS = {
    "pixelcnn": {"plugin": "pixelcnn", "layers": 1, "channels": 6, "head_channels": 6},
    "gated_pixelcnn": {"plugin": "gated_pixelcnn", "layers": 2, "channels": 6, "residual_channels": 6},
    "masked_transformer": {"plugin": "masked_transformer", "layers": 1, "heads": 2, "channels": 6},
    "hybrid": {"plugin": "hybrid", "transformer": {"layers": 1, "heads": 1, "channels": 6},
               "pixelcnn": {"layers": 1, "channels": 6, "residual_channels": 6}},
}


def two_stages(decoder: dict, channels: int = 1, size: int = 4) -> dict:
    """A depth split (1 + 2 bits) with subscale slices and a slice embedder in both stages."""
    stage = {"ordering": {"plugin": "subscale", "factor": 2}, "encoder": ENCODER, "decoder": decoder}
    return {"data": {"height": size, "width": size, "channels": channels, "bits": 3},
            "quantizer": {"plugin": "depth_split", "splits": [1, 2]},
            "stages": {"low": {"plane": 0, **stage}, "high": {"plane": 1, "conditions_on": ["low"], **stage}}}


THREE_STAGES = {
    "data": {"height": 4, "width": 4, "channels": 1, "bits": 2},
    "quantizer": {"plugin": "depth_split", "splits": [1, 1]},
    "stages": {
        "small": {"plane": 0, "downsample": 2, "decoder": DECODERS["gated_pixelcnn"]},
        "upscale": {"plane": 0, "given_slices": 1, "conditions_on": ["small"],
                    "ordering": {"plugin": "subscale", "factor": 2}, "encoder": ENCODER,
                    "decoder": DECODERS["gated_pixelcnn"]},
        "depth": {"plane": 1, "conditions_on": ["upscale"], "ordering": {"plugin": "subscale", "factor": 2},
                  "encoder": ENCODER, "decoder": DECODERS["hybrid"]},
    },
}


def pipeline_of(raw: dict, seed: int = 0) -> Pipeline:
    torch.manual_seed(seed)
    return build.build_pipeline(build.validate(raw)).eval()


def images(count: int, shape: tuple[int, int, int], bits: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 2**bits, (count, *shape), generator=torch.Generator().manual_seed(seed))


def assert_round_trips(pipeline: Pipeline, x: torch.Tensor, chunk: int) -> bytes:
    """All at once, each image alone, and a few out of order: exactly ``x``."""
    data = codec.compress(pipeline, x, chunk=chunk)
    assert torch.equal(codec.decompress(pipeline, data), x)
    for i in range(len(x)):
        assert torch.equal(codec.decompress(pipeline, data, indices=[i]), x[i : i + 1])
    order = [len(x) - 1, 0, len(x) // 2]
    assert torch.equal(codec.decompress(pipeline, data, indices=order), x[order])
    return data


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("decoder", DECODERS)
def test_every_builtin_decoder_round_trips_exactly(decoder, channels):
    pipeline = pipeline_of(two_stages(DECODERS[decoder], channels))
    assert_round_trips(pipeline, images(5, (channels, 4, 4), 3), chunk=2)


def test_a_decoder_without_a_cache_round_trips_through_full_passes():
    torch.manual_seed(0)
    decoder = DenseMaskedDecoder(DenseOptions(), SliceSpec(2, 3, 3, 4))
    stage = AutoregressiveStage(RasterOrdering(NoOptions()), decoder, None, (2, 3, 3), 4)
    pipeline = Pipeline(DepthSplit(DepthSplitOptions([2]), 2), {"only": stage}, {"only": (0, 1)}).eval()
    assert_round_trips(pipeline, images(4, (2, 3, 3), 2), chunk=3)


def test_plugin_decoders_round_trip_when_installed():
    pixelrnn = pytest.importorskip("spnkit_pixelrnn.decoders")
    torch.manual_seed(0)
    for cls, options in [(pixelrnn.RowLSTMDecoder, pixelrnn.RowLSTMOptions(layers=1, features=4)),
                         (pixelrnn.DiagonalBiLSTMDecoder, pixelrnn.DiagonalBiLSTMOptions(layers=1, features=4))]:
        stage = AutoregressiveStage(RasterOrdering(NoOptions()), cls(options, SliceSpec(1, 3, 3, 4)), None, (1, 3, 3), 4)
        pipeline = Pipeline(DepthSplit(DepthSplitOptions([2]), 2), {"only": stage}, {"only": (0, 1)}).eval()
        assert_round_trips(pipeline, images(3, (1, 3, 3), 2), chunk=2)


def test_three_stage_system_with_size_and_depth_upscaling_round_trips():
    assert_round_trips(pipeline_of(THREE_STAGES), images(5, (1, 4, 4), 2), chunk=3)


def test_the_same_images_round_trip_in_every_chunk_size():
    pipeline = pipeline_of(two_stages(DECODERS["hybrid"]))
    x = images(7, (1, 4, 4), 3)
    for chunk in (1, 3, 7, 16):
        data = codec.compress(pipeline, x, chunk=chunk)
        assert codec.read(data).chunk == chunk
        assert torch.equal(codec.decompress(pipeline, data), x)


def test_an_images_stream_does_not_depend_on_the_other_images_of_its_chunk():
    """Rows of a chunk do not mix: what makes decoding some of a chunk's images exact."""
    pipeline = pipeline_of(two_stages(DECODERS["hybrid"]))
    x = images(4, (1, 4, 4), 3)
    alone = codec.encode(pipeline, x[:1], chunk=4).streams
    others = torch.cat([x[:1], images(3, (1, 4, 4), 3, seed=9)])
    assert codec.encode(pipeline, x, chunk=4).streams[0] == codec.encode(pipeline, others, chunk=4).streams[0] == alone[0]


def test_decoding_ignores_the_callers_thread_count_and_training_mode():
    pipeline = pipeline_of(two_stages(DECODERS["hybrid"]))
    x = images(4, (1, 4, 4), 3)
    data = codec.compress(pipeline, x, chunk=4)
    threads = torch.get_num_threads()
    pipeline.train()
    try:
        torch.set_num_threads(2)
        assert torch.equal(codec.decompress(pipeline, data), x)
        assert torch.get_num_threads() == 2 and pipeline.training  # both restored
    finally:
        torch.set_num_threads(threads)


def test_a_pipeline_that_leaves_subpixels_unmodelled_cannot_code():
    whole = pipeline_of(two_stages(DECODERS["pixelcnn"]))
    low_only = Pipeline(whole.quantizer, {"low": whole.stages["low"]}, {"low": (0, 1)}).eval()
    with pytest.raises(ValueError, match="do not model every subpixel"):
        codec.compress(low_only, images(2, (1, 4, 4), 3))


# ----------------------------------------------------------------------------- exactness of the tables


PROBABILITIES = coding.probabilities


def recording(monkeypatch, flip_at: int | None = None) -> list:
    """Record every table ``coding.walk`` computes; with ``flip_at``, the lowest bit of image 0's
    largest logit is flipped (one ulp) at that subpixel first."""
    tables = []

    def probabilities(logits):
        if len(tables) == flip_at:
            logits = logits.clone()
            logits[0, logits[0].argmax()].view(torch.int32).bitwise_xor_(1)
        tables.append(PROBABILITIES(logits))
        return tables[-1]

    monkeypatch.setattr(coding, "probabilities", probabilities)
    return tables


def test_encoder_and_decoder_code_with_bit_identical_tables(monkeypatch):
    pipeline = pipeline_of(two_stages(DECODERS["hybrid"], channels=3))
    x = images(3, (3, 4, 4), 3)
    encoded = recording(monkeypatch)
    data = codec.compress(pipeline, x, chunk=3)
    decoded = recording(monkeypatch)
    codec.decompress(pipeline, data)
    assert len(encoded) == len(decoded) == 2 * 3 * 4 * 4  # stages, channels, pixels
    assert all(a.tobytes() == b.tobytes() for a, b in zip(encoded, decoded))
    flipped = recording(monkeypatch, flip_at=5)
    try:
        codec.decompress(pipeline, data)
    except codec.CodecError:
        pass
    assert flipped[5].tobytes() != encoded[5].tobytes()  # what the comparison above would catch


def test_a_one_ulp_different_logit_on_the_decoder_side_decodes_exactly_or_is_an_error(monkeypatch):
    """Flip one logit by one ulp at one subpixel, for each subpixel in turn until a flip reaches
    the coder: until then quantization absorbed it and the image decodes exactly; that one is
    caught by the image's CRC, never decoded into a wrong image."""
    pipeline = pipeline_of(two_stages(DECODERS["gated_pixelcnn"]))
    x = images(3, (1, 4, 4), 3)
    data = codec.compress(pipeline, x, chunk=3)
    for step in range(2 * 4 * 4):
        recording(monkeypatch, flip_at=step)
        try:
            assert torch.equal(codec.decompress(pipeline, data, indices=[0]), x[:1])
        except codec.CodecError as exc:
            assert "image 0 does not decode to what was coded (its CRC-32 differs)" in str(exc)
            return
    pytest.fail("no one-ulp flip reached the coder")


# ----------------------------------------------------------------------------- sizes


def test_streams_cost_the_nll_plus_a_little_per_image():
    pipeline = pipeline_of(two_stages(DECODERS["gated_pixelcnn"], size=8))
    x = images(6, (1, 8, 8), 3)
    coded = codec.encode(pipeline, x, chunk=4)
    with torch.no_grad():
        nll = {name: float(-lp.double().sum()) / math.log(2) for name, lp in pipeline.log_prob(x).items()}
    for name in nll:  # the walk's tables are the model's probabilities
        assert coded.stage_bits[name] == pytest.approx(nll[name], rel=1e-5)
    stream_bits = 8 * sum(len(s) for s in coded.streams)
    assert sum(nll.values()) < stream_bits <= 1.001 * sum(nll.values()) + 64 * len(x)  # 1-2 words per stream end
    data = codec.compress(pipeline, x, chunk=4)
    assert len(data) < stream_bits / 8 + 52 + 48 + 100 + 6 * len(x)  # prefix, fields, about, index


# ----------------------------------------------------------------------------- damaged and foreign files


@pytest.fixture(scope="module")
def coded():
    pipeline = pipeline_of(two_stages(DECODERS["pixelcnn"]))
    x = images(3, (1, 4, 4), 3)
    return pipeline, x, codec.compress(pipeline, x, chunk=2, about={"names": ["a", "b", "c"]})


@pytest.mark.parametrize("keep", [0, 7, 51, 52, 80, -1])
def test_a_truncated_file_is_refused(coded, keep):
    pipeline, _, data = coded
    with pytest.raises(codec.CodecError, match="not an spnkit compressed file|damaged: .* bytes after its header"):
        codec.decompress(pipeline, data[:keep] if keep >= 0 else data[:-1])


def test_every_flipped_bit_after_the_magic_is_refused(coded):
    pipeline, x, data = coded
    for position in range(8, len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 1 << (position % 8)
        with pytest.raises(codec.CodecError):
            codec.decompress(pipeline, bytes(damaged))


def test_extra_bytes_another_version_and_another_format_are_refused(coded):
    pipeline, _, data = coded
    with pytest.raises(codec.CodecError, match="extra bytes at the end"):
        codec.decompress(pipeline, data + b"\0")
    newer = data[:8] + struct.pack("<I", 2) + data[12:]
    with pytest.raises(codec.CodecError, match="format version 2; this spnkit reads version 1"):
        codec.decompress(pipeline, newer)
    with pytest.raises(codec.CodecError, match="not an spnkit compressed file"):
        codec.decompress(pipeline, b"\x89PNG\r\n\x1a\n" + bytes(100))


def test_a_file_with_a_valid_checksum_but_a_broken_index_is_refused(coded):
    _, _, data = coded
    body = bytearray(data[container.PREFIX.size :])
    struct.pack_into("<I", body, struct.calcsize("<32sBHHB"), 9)  # the count: more images than streams
    prefix = container.PREFIX.pack(container.MAGIC, container.VERSION, len(body), hashlib.sha256(body).digest())
    with pytest.raises(codec.CodecError, match="malformed"):
        container.unpack(prefix + bytes(body))


def test_a_file_from_another_model_is_refused(coded):
    pipeline, x, data = coded
    other = pipeline_of(two_stages(DECODERS["pixelcnn"]), seed=1)
    with pytest.raises(codec.CodecError, match="compressed with another model"):
        codec.decompress(other, data)
    with pytest.raises(codec.CodecError, match="compressed with another model"):
        codec.decompress(pipeline, data, recipe="a different recipe")
    assert torch.equal(codec.decompress(pipeline, data), x)


def test_bad_arguments_are_value_errors(coded):
    pipeline, x, data = coded
    for bad in (x[:, :, :3], x[:0], x.float(), x + 8, x - 1):
        with pytest.raises(ValueError):
            codec.compress(pipeline, bad)
    with pytest.raises(ValueError):
        codec.compress(pipeline, x, chunk=0)
    with pytest.raises(ValueError, match="outside"):
        codec.decompress(pipeline, data, indices=[3])
