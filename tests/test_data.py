"""Shards and the streaming loader: lossless round trips, exactly-once evaluation over ranks and
workers, exact resume of the training stream, damaged data, and the errors users see."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from PIL import Image

from spnkit import cli
from spnkit.data import DataError
from spnkit.data.idx import read_idx, write_idx
from spnkit.data.loader import TrainingBatches, exact_batches
from spnkit.data.sources import EMBEDDED, load_split
from spnkit.data.writer import Geometry, resize_area, transform, write_shards
from spnkit.core.recipe import DataConfig

CLASSES = ["cat", "dog", "owl"]


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory) -> tuple[Path, dict]:
    """37 RGB 12x12 PNGs in class subfolders; returns the folder and {(class, name): [C, H, W]}."""
    folder = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(1)
    images = {}
    for index in range(37):
        label = CLASSES[index % 3]
        (folder / label).mkdir(exist_ok=True)
        array = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / label / f"img.{index:03d}.png")
        images[(label, index)] = array.transpose(2, 0, 1)
    return folder, images


@pytest.fixture(scope="module")
def idx_file(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    folder = tmp_path_factory.mktemp("idx")
    images = read_idx(EMBEDDED / "t10k-images-idx3-ubyte.gz")[:53]
    labels = read_idx(EMBEDDED / "t10k-labels-idx1-ubyte.gz")[:53]
    write_idx(folder / "small-images-idx3-ubyte.gz", images)
    write_idx(folder / "small-labels-idx1-ubyte.gz", labels)
    return folder / "small-images-idx3-ubyte.gz", images, labels


def data_config(folder: Path, manifest: dict, split: str = "train", **extra) -> DataConfig:
    count = len(manifest["splits"][split]["shards"])
    return DataConfig(source="shards", channels=manifest["channels"], height=manifest["height"],
                      width=manifest["width"], train=str(folder / f"train-{{000000..{count - 1:06d}}}.tar"),
                      test=str(folder / f"{split}-{{000000..{count - 1:06d}}}.tar"), **extra)


def exact_pass(config: DataConfig, split: str, batch: int = 4, ranks: int = 1, workers: int = 0) -> list:
    """(key, image, label) of every valid sample over all ranks."""
    found = load_split(config, split)
    seen = []
    for rank in range(ranks):
        for item in exact_batches(found.shards, batch, (config.channels, config.height, config.width),
                                  rank=rank, world=ranks, workers=workers):
            assert item["images"].shape == (batch, config.channels, config.height, config.width)
            for key, image, label in zip(item["keys"], item["images"][item["valid"]], item["labels"][item["valid"]]):
                seen.append((key, image.numpy(), int(label)))
            assert int(item["valid"].sum()) == len(item["keys"])
    return seen


@pytest.mark.parametrize(("ranks", "workers"), [(1, 0), (1, 1), (1, 2), (1, 4), (2, 0), (2, 2)])
def test_png_folder_round_trip_exactly_once(png_folder, tmp_path, ranks, workers):
    folder, images = png_folder
    manifest = write_shards([folder], tmp_path, Geometry(None), split="train", shard_size=5, workers=2,
                            progress=False)
    assert manifest["classes"] == CLASSES and manifest["splits"]["train"]["samples"] == 37
    seen = exact_pass(data_config(tmp_path, manifest), "train", ranks=ranks, workers=workers)
    keys = [key for key, _, _ in seen]
    assert len(keys) == len(set(keys)) == 37
    for key, image, label in seen:
        cls, name = key.split("_", 1)
        assert "." not in key and CLASSES[label] == cls
        np.testing.assert_array_equal(image, images[(cls, int(name.split("_")[1]))])


@pytest.mark.parametrize(("ranks", "workers"), [(1, 1), (1, 2), (1, 4), (2, 1)])
def test_idx_round_trip_with_splits_and_labels(idx_file, tmp_path, ranks, workers):
    path, images, labels = idx_file
    manifest = write_shards([path], tmp_path, Geometry(None), split="train=0.8,test=0.2", shard_size=8,
                            workers=2, progress=False)
    assert {n: s["samples"] for n, s in manifest["splits"].items()} == {"train": 42, "test": 11}
    seen = [s for split in ("train", "test")
            for s in exact_pass(data_config(tmp_path, manifest, split), split, ranks=ranks, workers=workers)]
    assert sorted(int(key.rsplit("_", 1)[1]) for key, _, _ in seen) == list(range(53))
    for key, image, label in seen:
        index = int(key.rsplit("_", 1)[1])
        np.testing.assert_array_equal(image[0], images[index])
        assert label == labels[index]


def test_sharding_is_deterministic_and_parallel_safe(png_folder, tmp_path):
    folder, _ = png_folder
    one = write_shards([folder], tmp_path / "a", Geometry(8, "center-crop"), shard_size=6, workers=1, progress=False)
    two = write_shards([folder], tmp_path / "b", Geometry(8, "center-crop"), shard_size=6, workers=2, progress=False)
    assert one == two
    for shard in one["splits"]["train"]["shards"]:
        data = (tmp_path / "b" / shard["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]


def test_area_resize_is_a_box_average():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (8, 12), dtype=np.uint8)
    image = transform(Image.fromarray(array), Geometry(4, "center-crop"))  # crop 8x8, then 2x2 boxes
    blocks = array[:, 2:10].reshape(4, 2, 4, 2).astype(float).mean(axis=(1, 3))
    np.testing.assert_array_equal(np.asarray(image), np.rint(blocks))
    squeezed = transform(Image.fromarray(array), Geometry(4))  # the whole 8x12 image: 2x3 boxes
    np.testing.assert_array_equal(np.asarray(squeezed), np.rint(array.reshape(4, 2, 4, 3).astype(float).mean(axis=(1, 3))))
    row = rng.integers(0, 256, (1, 5, 3), dtype=np.uint8)  # 5 -> 2 columns: 2.5 input pixels each
    first = (row[0, 0].astype(float) + row[0, 1] + 0.5 * row[0, 2]) / 2.5
    np.testing.assert_array_equal(resize_area(row, 1, 2)[0, 0], np.rint(first))


def test_training_stream_resumes_exactly_and_ranks_split_it(idx_file, tmp_path):
    path, _, _ = idx_file
    manifest = write_shards([path], tmp_path, Geometry(None), split="train", shard_size=8, progress=False)
    shards = load_split(data_config(tmp_path, manifest), "train").shards
    shape = (1, 28, 28)
    whole = TrainingBatches(shards, 6, shape, seed=5, streams=2, workers=2)
    expected = [next(whole) for _ in range(12)]
    first = TrainingBatches(shards, 6, shape, seed=5, streams=2, workers=2)
    taken = [next(first) for _ in range(7)]
    resumed = TrainingBatches(shards, 6, shape, seed=5, streams=2, workers=0,
                              state=json.loads(json.dumps(first.state())))
    taken += [next(resumed) for _ in range(5)]
    for a, b in zip(expected, taken):
        assert a.images.shape == (6, 1, 28, 28)
        assert (a.images == b.images).all() and (a.uniform == b.uniform).all()
    ranks = [TrainingBatches(shards, 6, shape, seed=5, rank=rank, world=2, streams=2) for rank in (0, 1)]
    for batch in expected[:4]:
        parts = [next(r) for r in ranks]
        assert parts[0].images.shape == (3, 1, 28, 28) and not (parts[0].images == parts[1].images).all()
        assert (torch.cat([p.images for p in parts]) == batch.images).all()
        assert (torch.cat([p.uniform for p in parts]) == batch.uniform).all()
    with pytest.raises(DataError, match="data.streams: 3 streams must divide the batch of 6, and split evenly"):
        TrainingBatches(shards, 6, shape, seed=5, world=2, streams=3)


def damage(folder: Path, manifest: dict) -> tuple[str, str]:
    """Break one PNG in the first shard and truncate the last member of the second; returns the
    two damaged keys."""
    first, second = (folder / s["name"] for s in manifest["splits"]["train"]["shards"][:2])
    with tarfile.open(first) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    broken = members[2][0].name.split(".")[0]
    with tarfile.open(first, "w") as tar:
        for member, data in members:
            if member.name.startswith(broken) and member.name.endswith(".png"):
                data = data[:40] + b"\0" * (len(data) - 40)
            tar.addfile(member, io.BytesIO(data))
    with tarfile.open(second) as tar:
        last = tar.getmembers()[-1]
    truncated = last.name.split(".")[0]
    second.write_bytes(second.read_bytes()[: last.offset_data + 3])
    return broken, truncated


def test_damaged_samples_are_skipped_and_named(idx_file, tmp_path):
    path, images, _ = idx_file
    manifest = write_shards([path], tmp_path, Geometry(None), split="train", shard_size=8, progress=False)
    broken, truncated = damage(tmp_path, manifest)
    with pytest.warns(UserWarning, match="train-000001.tar has .* bytes, .*manifest.json says"):
        shards = load_split(DataConfig(source="shards", train=str(tmp_path / "train-*.tar")), "train")
    with pytest.warns(UserWarning) as caught:
        seen = []
        for item in exact_batches(shards.shards, 5, (1, 28, 28)):
            seen += item["keys"]
    messages = " ".join(str(w.message) for w in caught)
    assert f"'{broken}' in {tmp_path / 'train-000000.tar'}" in messages
    assert f"'{truncated}' in {tmp_path / 'train-000001.tar'}" in messages
    assert len(seen) == 53 - 2 and broken not in seen and truncated not in seen
    with pytest.warns(UserWarning, match="skipped"):
        stream = TrainingBatches(shards.shards, 8, (1, 28, 28), seed=0, max_bad=2)
        for _ in range(40):
            assert next(stream).images.shape == (8, 1, 28, 28)
    assert len(stream.state()["skipped"]) == 2
    with pytest.warns(UserWarning), pytest.raises(DataError, match="more than data.max_bad_samples = 1"):
        stream = TrainingBatches(shards.shards, 8, (1, 28, 28), seed=0, max_bad=1)
        for _ in range(40):
            next(stream)


def test_manifest_mismatch_empty_and_missing_shards_are_clear_errors(idx_file, tmp_path):
    path, _, _ = idx_file
    manifest = write_shards([path], tmp_path, Geometry(None), split="train", shard_size=30, progress=False)
    config = data_config(tmp_path, manifest)
    with pytest.raises(DataError, match=r"recipe says \(3, 28, 28\)"):
        load_split(DataConfig(**{**attrs.asdict(config), "channels": 3}), "train")
    with pytest.raises(DataError, match="the 1 shards of .*empty.tar hold no samples"):
        load_split(DataConfig(**{**attrs.asdict(config), "train": str(_empty_shard(tmp_path))}), "train")
    with pytest.raises(DataError, match=r"1 of 3 shards not found: .*train-000002.tar \(make them with `spnkit shard x`"):
        load_split(DataConfig(**{**attrs.asdict(config), "prepare": "spnkit shard x",
                                 "train": str(tmp_path / "train-{000000..000002}.tar")}), "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train-000000.tar").write_bytes(b"")
    stream = TrainingBatches(load_split(DataConfig(source="shards", train=str(empty / "train-000000.tar")),
                                        "train").shards, 2, (1, 28, 28), seed=0, max_bad=5)
    with pytest.warns(UserWarning, match="empty"), pytest.raises(DataError, match="no readable sample in 1001 tries"):
        next(stream)


def _empty_shard(folder: Path) -> Path:
    """A valid tar with no samples, listed in the folder's manifest."""
    path = folder / "empty.tar"
    tarfile.open(path, "w").close()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["splits"]["empty"] = {"samples": 0, "shards": [{"name": "empty.tar", "samples": 0,
                                                            "bytes": path.stat().st_size, "sha256": ""}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_more_workers_than_shards(idx_file, tmp_path):
    path, _, _ = idx_file
    manifest = write_shards([path], tmp_path, Geometry(None), split="train", shard_size=30, progress=False)
    seen = exact_pass(data_config(tmp_path, manifest), "train", batch=16, ranks=2, workers=3)
    assert len({key for key, _, _ in seen}) == len(seen) == 53


def test_shard_command_and_a_run_on_the_shards(idx_file, tmp_path, capsys):
    path, _, _ = idx_file
    out = tmp_path / "shards"
    assert cli.main(["shard", str(path), str(out), "--split", "train=40,test=rest", "--shard-size", "16",
                     "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"train: 40 images (1x28x28) in 3 shards: {out}/train-{{000000..000002}}.tar" in printed
    assert cli.main(["shard", str(path), str(out), "--split", "train=0.5,test=0.4", "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: --split: train=0.5,test=0.4 does not divide 53 images")


def test_downsampled_imagenet_npz_batches(tmp_path):
    rng = np.random.default_rng(2)
    rows = rng.integers(0, 256, (9, 3 * 8 * 8), dtype=np.uint8)  # channel-major rows, as the official files
    np.savez(tmp_path / "train_data_batch_1.npz", data=rows, labels=np.arange(1, 10), mean=np.zeros(3))
    out = tmp_path / "shards"
    manifest = write_shards([tmp_path / "train_data_batch_1.npz"], out, Geometry(None), split="train", progress=False)
    assert (manifest["channels"], manifest["height"], manifest["width"]) == (3, 8, 8)
    seen = exact_pass(data_config(out, manifest), "train")
    for key, image, label in seen:
        index = int(key.rsplit("_", 1)[1])
        np.testing.assert_array_equal(image, rows[index].reshape(3, 8, 8))
        assert label == index  # stored 0-based
    assert len(seen) == 9


def test_images_of_different_sizes_need_a_size(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 6)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match=r"\.png: image is \(3, \d, 8\) .* use --size"):
        write_shards([tmp_path], tmp_path / "out", Geometry(None), split="train", workers=1, progress=False)
    manifest = write_shards([tmp_path], tmp_path / "out", Geometry(4, "center-crop"), split="train", workers=1,
                            progress=False)
    assert manifest["splits"]["train"]["samples"] == 2 and manifest["height"] == 4
