"""``spnkit compress`` / ``spnkit decompress``: files round trip under their names, and every
bad input is one ``error:`` line, exit status 2, with nothing written and no good file replaced."""

import gzip
import shutil

import numpy as np
import pytest
import tomli_w
import torch
from PIL import Image

from spnkit import cli, codec
from spnkit.core import build
from spnkit.data.idx import write_idx
from spnkit.engine import checkpoint
from spnkit.engine.image_inputs import read_inputs

STAGE = {"ordering": {"plugin": "subscale", "factor": 2},
         "encoder": {"plugin": "slice_embedder", "conv_layers": 1, "channels": 4, "attention_layers": 0,
                     "residual_blocks": 1, "residual_channels": 4},
         "decoder": {"plugin": "gated_pixelcnn", "layers": 1, "channels": 4, "residual_channels": 4}}
RECIPE = {"name": "tiny", "data": {"source": "shards", "height": 8, "width": 8, "channels": 1, "bits": 8},
          "quantizer": {"plugin": "depth_split", "splits": [3, 5]},
          "stages": {"low": {"plane": 0, **STAGE}, "high": {"plane": 1, "conditions_on": ["low"], **STAGE}}}


def make_run(folder, recipe_path, seed: int) -> None:
    """A run folder with untrained (seeded) weights, as ``spnkit train`` leaves it."""
    resolved = build.load(str(recipe_path))
    torch.manual_seed(seed)
    for name, stage in build.build_pipeline(resolved).stages.items():
        state = stage.state_dict()
        checkpoint.save({"stage": name, "fingerprint": checkpoint.stage_fingerprint(resolved, name), "model": state,
                         "ema": state, "optimizer": {}, "step": 0}, folder / "stages" / name)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("codec")
    recipe = root / "tiny.toml"
    recipe.write_text(tomli_w.dumps(RECIPE))
    make_run(root / "run", recipe, seed=0)
    make_run(root / "other", recipe, seed=1)
    return root, recipe


def pixels(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 8, 8), dtype=np.uint8)


def compress(setup, *inputs, output="set.spnz"):
    root, recipe = setup
    return cli.main(["compress", str(recipe), *map(str, inputs), "-o", str(root / output), "--run",
                     str(root / "run"), "--batch", "2", "--quiet"])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_files_round_trip_under_their_names(setup, tmp_path, capsys):
    root, _ = setup
    images = pixels(8, 0)
    Image.fromarray(images[0]).save(tmp_path / "fm_003.png")
    (tmp_path / "folder" / "shirts").mkdir(parents=True)
    Image.fromarray(images[1]).save(tmp_path / "folder" / "shirts" / "a.png")
    np.save(tmp_path / "arrays.npy", images[2:5])
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[5:8])
    inputs = [tmp_path / "fm_003.png", tmp_path / "folder", tmp_path / "arrays.npy", tmp_path / "t10k-images-idx3-ubyte"]
    assert compress(setup, *inputs) == 0
    assert "8 images in" in capsys.readouterr().out
    (tmp_path / "probe").write_bytes(b"")
    assert (root / "set.spnz").stat().st_mode == (tmp_path / "probe").stat().st_mode  # the umask's, not private
    out = tmp_path / "out"
    assert cli.main(["decompress", str(root / "set.spnz"), "-o", str(out), "--quiet"]) == 0
    assert "images/s" in capsys.readouterr().out
    names = ["fm_003", "shirts_a", *(f"arrays_{i:07d}" for i in range(3)), *(f"t10k-images-idx3-ubyte_{i:07d}" for i in range(3))]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in names)
    for name, image in zip(names, images):
        assert np.array_equal(np.asarray(Image.open(out / f"{name}.png")), image), name


def bad_inputs(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(pixels(1, 1)[0]).save(good)
    Image.fromarray(pixels(1, 2)[0][:7]).save(tmp_path / "short.png")
    Image.fromarray(np.stack([pixels(1, 3)[0]] * 3, axis=-1)).save(tmp_path / "rgb.png")
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "floats.npy", pixels(2, 4).astype(np.float32))
    return {"short.png": "an image of 1 channel(s), 8x7; the recipe's images have 1, 8x8",
            "rgb.png": "a RGB image; the recipe's images are L",
            "garbage.png": "cannot read the image", "cut.png": "cannot read the image",
            "empty": "no .png/.jpg/.jpeg images found", "floats.npy": "expected uint8 pixels",
            "missing.png": "no such file or folder"}


def test_every_bad_input_is_one_error_line_and_keeps_the_old_file(setup, tmp_path, capsys):
    root, _ = setup
    expected = bad_inputs(tmp_path)
    target = root / "kept.spnz"
    target.write_bytes(b"a good old file")
    for name, message in expected.items():
        assert compress(setup, tmp_path / "good.png", tmp_path / name, output="kept.spnz") == 2, name
        assert message in one_error_line(capsys), name
        assert target.read_bytes() == b"a good old file"
    assert not list(root.glob(".kept.spnz*"))  # no temporary file left behind


def test_an_empty_input_list_is_one_error_line(setup, capsys):
    root, recipe = setup
    with pytest.raises(SystemExit) as exit:
        cli.main(["compress", str(recipe), "-o", str(root / "none.spnz")])
    assert exit.value.code == 2
    assert "the following arguments are required: INPUT" in one_error_line(capsys)
    assert not (root / "none.spnz").exists()


def test_values_finer_than_the_recipes_bits_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.array([[[[1] * 8] * 8]], dtype=np.uint8))
    data = build.validate({**RECIPE, "data": {**RECIPE["data"], "bits": 5},
                           "quantizer": {"plugin": "depth_split", "splits": [2, 3]}}).recipe.data
    with pytest.raises(Exception, match="pixel values the recipe's 5 bits cannot hold"):
        read_inputs([tmp_path / "x.npy"], data)


@pytest.fixture(scope="module")
def compressed(setup):
    root, _ = setup
    np.save(root / "three.npy", pixels(3, 5))
    assert compress(setup, root / "three.npy", output="three.spnz") == 0
    return root / "three.spnz"


def damaged(compressed, tmp_path):
    data = compressed.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 4
    cases = {"truncated": (data[:-3], "damaged: "), "flipped": (bytes(flipped), "its SHA-256 checksum does not match"),
             "png": (b"\x89PNG\r\n\x1a\n" + bytes(40), "is not an spnkit compressed file"),
             "gzip": (gzip.compress(data), "is not an spnkit compressed file")}
    paths = {}
    for name, (content, message) in cases.items():
        paths[name] = (tmp_path / f"{name}.spnz", message)
        paths[name][0].write_bytes(content)
    return paths


def test_damaged_files_are_one_error_line_and_write_nothing(compressed, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "three_0000000.png").write_bytes(b"a good old image")
    for name, (path, message) in damaged(compressed, tmp_path).items():
        assert cli.main(["decompress", str(path), "-o", str(out), "--quiet"]) == 2, name
        assert message in one_error_line(capsys), name
        assert sorted(p.name for p in out.iterdir()) == ["three_0000000.png"]
        assert (out / "three_0000000.png").read_bytes() == b"a good old image"
    assert cli.main(["decompress", str(tmp_path / "absent.spnz"), "-o", str(out), "--quiet"]) == 2
    assert "cannot read" in one_error_line(capsys)


def test_a_file_from_another_model_is_one_error_line(setup, compressed, tmp_path, capsys):
    root, _ = setup
    assert cli.main(["decompress", str(compressed), "-o", str(tmp_path / "out"), "--run", str(root / "other"),
                     "--quiet"]) == 2
    assert "was compressed with another model" in one_error_line(capsys)
    assert not list((tmp_path / "out").glob("*.png"))


def test_a_moved_run_is_named_by_the_error_and_found_with_run(setup, compressed, tmp_path, capsys):
    root, _ = setup
    moved = tmp_path / "moved"
    shutil.copytree(root / "run", moved)
    data = compressed.read_bytes()
    shutil.move(root / "run", root / "run.away")
    try:
        assert cli.main(["decompress", str(compressed), "-o", str(tmp_path / "out"), "--quiet"]) == 2
        assert f"made with the run folder {root / 'run'}, which is not there: pass --run" in one_error_line(capsys)
        assert cli.main(["decompress", str(compressed), "-o", str(tmp_path / "out"), "--run", str(moved),
                         "--quiet"]) == 0
    finally:
        shutil.move(root / "run.away", root / "run")
    assert compressed.read_bytes() == data
    assert len(list((tmp_path / "out").glob("three_*.png"))) == 3


def test_a_file_made_in_python_is_one_error_line(setup, tmp_path, capsys):
    root, recipe = setup
    pipeline = checkpoint.load_trained(build.load(str(recipe)), root / "run")
    path = tmp_path / "python.spnz"
    path.write_bytes(codec.compress(pipeline, torch.from_numpy(pixels(1, 6))[:, None].long()))
    assert cli.main(["decompress", str(path), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    assert "not written by spnkit compress" in one_error_line(capsys)


def test_a_conditional_recipe_is_one_error_line(tmp_path, capsys):
    assert cli.main(["compress", "recipes/quickstart_conditional.toml", str(tmp_path / "x.png"), "-o",
                     str(tmp_path / "x.spnz")]) == 2
    assert "the codec codes unconditional systems only" in one_error_line(capsys)
