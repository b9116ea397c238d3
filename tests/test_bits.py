"""``data.bits`` means the most significant bits of each 8-bit subpixel, in training,
evaluation, sampling and completion alike."""

import torch

from spnkit.core import build
from spnkit.data.config import DataConfig
from spnkit.engine import evaluate, run

FIVE_BITS = {
    "data": {"source": "fashion_mnist_embedded", "height": 4, "width": 4, "bits": 5},
    "quantizer": {"plugin": "depth_split", "splits": [2, 3]},
    "stages": {
        "low": {"plane": 0, "decoder": {"plugin": "gated_pixelcnn", "layers": 1, "channels": 4, "residual_channels": 4}},
        "high": {"plane": 1, "conditions_on": ["low"],
                 "encoder": {"plugin": "slice_embedder", "conv_layers": 1, "channels": 4, "attention_layers": 0},
                 "decoder": {"plugin": "gated_pixelcnn", "layers": 1, "channels": 4, "residual_channels": 4}},
    },
}


def test_levels_are_the_most_significant_bits():
    data = DataConfig(bits=5)
    pixels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(data.to_levels(pixels), torch.arange(256) >> 3)
    assert torch.equal(data.to_pixels(data.to_levels(pixels)), pixels & 0xF8)
    assert torch.equal(DataConfig(bits=8).to_levels(pixels), torch.arange(256))


def test_flipping_the_top_bit_changes_the_likelihood_and_the_dropped_bits_do_not():
    resolved = build.validate(FIVE_BITS)
    torch.manual_seed(0)
    pipeline = build.build_pipeline(resolved).eval()
    images = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)

    def bits(x):
        batch = {"images": x, "valid": torch.ones(len(x), dtype=torch.bool)}
        return evaluate.bits_per_dim(pipeline, [batch], resolved.recipe.data.to_levels, progress=False)

    same = bits(images)
    assert bits(images ^ 0x80)["test_bits_per_dim"] != same["test_bits_per_dim"]
    assert bits(images ^ 0x07)["test_bits_per_dim"] == same["test_bits_per_dim"]  # below the 5 bits


def test_samples_and_completions_are_8_bit_pixels_of_5_bit_levels():
    resolved = build.validate(FIVE_BITS)
    torch.manual_seed(0)
    pipeline = build.build_pipeline(resolved).eval()
    drawn = run.sample(resolved, pipeline, 8)
    assert drawn.dtype.name == "uint8" and not (drawn & 0x07).any() and (drawn >> 3).max() > 3
    known = torch.randint(0, 256, (1, 4, 4), dtype=torch.uint8).numpy()
    completed = run.sample(resolved, pipeline, 4, complete=known, keep="planes:1")
    assert ((completed >> 6) == (known >> 6)).all()  # the kept plane is the 2 top bits of the image
