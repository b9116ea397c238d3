"""Damaged data and files end in one ``error:`` line (exit 2), never a traceback or a silent
figure: IDX / .gz files, empty or damaged test splits, warnings that name shard and key, and
recipe files that are not text."""

import gzip
import io
import struct
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from spnkit import cli
from spnkit.core import build
from spnkit.data import sources
from spnkit.data.idx import read_idx, write_idx
from spnkit.data.loader import TarShard, array_shards, exact_batches
from spnkit.data.writer import Geometry, write_shards
from spnkit.engine import evaluate
from spnkit.engine.checkpoint import load_trained
from test_engine import RECIPE

IMAGES = "train-images-idx3-ubyte.gz"
LABELS = "train-labels-idx1-ubyte.gz"


def one_error(capsys, *args) -> str:
    """Run the CLI; it must exit 2 with exactly one ``error:`` line and no traceback."""
    code = cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err
    assert code == 2 and len(lines) == 1, err
    return lines[0]


def write_recipe(folder: Path, **data) -> Path:
    path = folder / "tiny.toml"
    path.write_text(tomli_w.dumps({**RECIPE, "data": {**RECIPE["data"], **data}}))
    return path


def idx_bytes(array: np.ndarray, count: int | None = None) -> bytes:
    """An uncompressed IDX file of ``array``; ``count``: what the header claims for dimension 0."""
    shape = (array.shape[0] if count is None else count, *array.shape[1:])
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *shape) + array.tobytes()


@pytest.fixture(scope="module")
def fashion():
    images = read_idx(sources.EMBEDDED / "t10k-images-idx3-ubyte.gz")[:20]
    labels = read_idx(sources.EMBEDDED / "t10k-labels-idx1-ubyte.gz")[:20]
    return images, labels


def fashion_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    folder.mkdir(exist_ok=True)
    for stem in ("train", "t10k"):
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", labels)
    return folder


def _cut_in_half(folder, images, labels):
    data = (folder / IMAGES).read_bytes()
    (folder / IMAGES).write_bytes(data[: len(data) // 2])
    return IMAGES, "the gzip stream ends early (truncated file?)"


def _wrong_magic(folder, images, labels):
    (folder / IMAGES).write_bytes(gzip.compress(b"PK\x03\x04" + idx_bytes(images)[4:]))
    return IMAGES, "not an IDX file (it starts with 50 4b 03 04"


def _more_items_than_present(folder, images, labels):
    (folder / IMAGES).write_bytes(gzip.compress(idx_bytes(images, count=30)))
    return IMAGES, "the header says 30x28x28 = 23,520 bytes of data, the file holds 15,680 (truncated?)"


def _not_gzip(folder, images, labels):
    (folder / IMAGES).write_bytes(idx_bytes(images))
    return IMAGES, "not gzip data"


def _header_cut(folder, images, labels):
    (folder / IMAGES).write_bytes(gzip.compress(b"\0\0\x08\x03\0\0\0\x14"))
    return IMAGES, "the header is cut short (8 bytes; 3 dimensions need 16)"


def _missing_labels(folder, images, labels):
    (folder / LABELS).unlink()
    return LABELS, "no such file"


def _fewer_labels(folder, images, labels):
    write_idx(folder / LABELS, labels[:7])
    return LABELS, "7 labels for the 20 images of train-images-idx3-ubyte.gz"


def _not_a_file(folder, images, labels):
    (folder / IMAGES).unlink()
    (folder / IMAGES).mkdir()
    return IMAGES, "cannot read it (Is a directory)"


DAMAGE = [_cut_in_half, _wrong_magic, _more_items_than_present, _not_gzip, _header_cut, _missing_labels,
          _fewer_labels, _not_a_file]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_damaged_idx_files_are_one_error_line(damage, fashion, tmp_path, monkeypatch, capsys):
    folder = fashion_folder(tmp_path / "fm", *fashion)
    name, problem = damage(folder, *fashion)
    monkeypatch.setattr(sources, "EMBEDDED", folder)
    line = one_error(capsys, "train", write_recipe(tmp_path), "--out", tmp_path / "run", "--quiet")
    assert line.startswith(f"error: {folder / name}: {problem}"), line
    assert not (tmp_path / "run" / "stages").exists()


@pytest.mark.parametrize("damage", [_cut_in_half, _more_items_than_present, _not_gzip],
                         ids=lambda f: f.__name__.strip("_"))
def test_shard_command_names_a_damaged_idx_file(damage, fashion, tmp_path, capsys):
    folder = fashion_folder(tmp_path / "fm", *fashion)
    name, problem = damage(folder, *fashion)
    line = one_error(capsys, "shard", folder / name, tmp_path / "out", "--split", "train", "--quiet")
    assert line.startswith(f"error: {folder / name}: {problem}"), line


def test_idx_header_claiming_a_huge_array_is_read_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**16, 2**16) + b"\0" * 100)
    with pytest.raises(sources.DataError, match=r"holds 100 \(truncated\?\)"):
        read_idx(path)


# ----------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run folder with both stages of the tiny recipe trained for one step."""
    folder = tmp_path_factory.mktemp("trained")
    assert cli.main(["train", str(write_recipe(folder)), "--out", str(folder / "run"), "--quiet",
                     "train.steps=1"]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def test_shards(tmp_path_factory, fashion) -> tuple[Path, dict]:
    """53 images: 3 train, 50 test in five shards of 10, with a manifest."""
    images, labels = fashion
    source = tmp_path_factory.mktemp("idx")
    write_idx(source / "small-images-idx3-ubyte.gz", np.concatenate([images, images, images[:13]]))
    write_idx(source / "small-labels-idx1-ubyte.gz", np.concatenate([labels, labels, labels[:13]]))
    out = tmp_path_factory.mktemp("shards")
    manifest = write_shards([source / "small-images-idx3-ubyte.gz"], out, Geometry(None), split="train=3,test=rest",
                            shard_size=10, workers=1, progress=False)
    return out, manifest


def copy_shards(test_shards, folder: Path) -> Path:
    source, _ = test_shards
    folder.mkdir()
    for path in source.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def shards_recipe(tmp_path: Path, folder: Path, **data) -> Path:
    return write_recipe(tmp_path, source="shards", train=str(folder / "train-000000.tar"),
                        test=str(folder / "test-{000000..000004}.tar"), **data)


def corrupt_png_in_place(path: Path, index: int) -> str:
    """Overwrite the PNG signature of the ``index``-th sample (same size: the manifest still
    matches); returns its key."""
    with tarfile.open(path) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".png")][index]
    with open(path, "r+b") as handle:
        handle.seek(member.offset_data)
        handle.write(b"JUNKJUNK")
    return member.name.split(".")[0]


def test_unreadable_test_image_with_a_known_count_is_an_error(trained, test_shards, tmp_path, capsys):
    folder = copy_shards(test_shards, tmp_path / "shards")
    key = corrupt_png_in_place(folder / "test-000002.tar", 4)
    with pytest.warns(UserWarning) as caught:
        line = one_error(capsys, "eval", shards_recipe(tmp_path, folder), "--out", trained, "--quiet")
    assert line == ("error: eval: scored 49 of 50 test images (1 could not be read: see the warnings); "
                    "the figure would not be the test set's")
    messages = [str(w.message) for w in caught]
    assert any(f"sample {key!r} in {folder / 'test-000002.tar'}: " in m for m in messages), messages
    assert not any("object at 0x" in m for m in messages), messages


@pytest.mark.parametrize("workers", [0, 1])
def test_test_shard_cut_in_half_is_an_error(trained, test_shards, tmp_path, capsys, workers):
    folder = copy_shards(test_shards, tmp_path / "shards")
    shard = folder / "test-000003.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.warns(UserWarning, match="test-000003.tar"):
        line = one_error(capsys, "eval", shards_recipe(tmp_path, folder, workers=workers), "--out", trained,
                         "--quiet")
    assert line.startswith("error: eval: scored 4") and "of 50" not in line
    assert line.endswith("test images; 1 damaged sample or shard could not be read (see the warnings); "
                         "the figure would not be the test set's"), line


def test_test_shard_cut_between_members_is_not_silently_short(trained, test_shards, tmp_path, capsys):
    """tarfile stops quietly when a file ends exactly between members; the loader must notice."""
    folder = copy_shards(test_shards, tmp_path / "shards")
    shard = folder / "test-000001.tar"
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    shard.write_bytes(shard.read_bytes()[: members[6].offset])  # three whole samples (png + cls) remain
    with pytest.warns(UserWarning) as caught:
        line = one_error(capsys, "eval", shards_recipe(tmp_path, folder), "--out", trained, "--quiet")
    assert line.startswith("error: eval: scored 43 test images; 1 damaged sample or shard"), line
    messages = " ".join(str(w.message) for w in caught)
    assert f"in {shard}: the file ends at byte {members[6].offset} without a tar end-of-archive marker" in messages


def test_a_deliberate_max_images_subset_is_still_a_result(trained, test_shards, tmp_path, capsys):
    folder = copy_shards(test_shards, tmp_path / "shards")
    corrupt_png_in_place(folder / "test-000000.tar", 0)
    with pytest.warns(UserWarning, match="skipped"):
        assert cli.main(["eval", str(shards_recipe(tmp_path, folder)), "--out", str(trained), "--quiet",
                         "eval.max_images=20", "eval.batch_size=10"]) == 0
    assert "[20 images; 1 damaged sample skipped]" in capsys.readouterr().out


def test_empty_test_split_is_an_error(trained, fashion, tmp_path, monkeypatch, capsys):
    images, labels = fashion
    folder = fashion_folder(tmp_path / "fm", images, labels)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images[:0])
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels[:0])
    monkeypatch.setattr(sources, "EMBEDDED", folder)
    line = one_error(capsys, "eval", write_recipe(tmp_path), "--out", trained, "--quiet")
    assert line == f"error: {folder / 't10k-images-idx3-ubyte.gz'}: holds no images (the test split would be empty)"


def test_empty_test_shard_without_a_manifest_is_an_error(trained, tmp_path, capsys):
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    recipe = write_recipe(tmp_path, source="shards", train=str(empty), test=str(empty))
    line = one_error(capsys, "eval", recipe, "--out", trained, "--quiet")
    assert line == f"error: eval: the test split ({empty}) holds no images; there is nothing to score"


class ThreadRank:
    """One of ``world`` ranks run as threads: ``sum`` and ``gather`` meet the others at a barrier,
    as an all-reduce would (what ``bits_per_dim`` asks of a multi-process backend)."""

    def __init__(self, rank: int, world: int, barrier: threading.Barrier, slots: list) -> None:
        self.rank, self.world, self.barrier, self.slots = rank, world, barrier, slots

    def _exchange(self, value) -> list:
        self.slots[self.rank] = value
        self.barrier.wait()
        seen = list(self.slots)
        self.barrier.wait()
        return seen

    def sum(self, tensor):
        return sum(self._exchange(tensor))

    def gather(self, value) -> list:
        return self._exchange(value)


def evaluate_on_two_ranks(resolved, pipeline, split) -> list:
    """Each rank's result or exception."""
    barrier, slots, outcomes = threading.Barrier(2, timeout=120), [None, None], [None, None]

    def rank(r: int) -> None:
        batches = exact_batches(split.shards, 10, resolved.recipe.data.shape, rank=r, world=2)
        try:
            outcomes[r] = evaluate.bits_per_dim(pipeline, batches, resolved.recipe.data.to_levels, 0, split.samples,
                                                progress=False, backend=ThreadRank(r, 2, barrier, slots))
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcomes[r] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_with_several_processes_the_count_is_summed_before_it_is_checked(trained, test_shards, tmp_path):
    folder = copy_shards(test_shards, tmp_path / "shards")
    resolved = build.load(str(shards_recipe(tmp_path, folder)), [])
    pipeline = load_trained(resolved, trained)
    split = sources.load_split(resolved.recipe.data, "test")
    whole = evaluate.bits_per_dim(pipeline, exact_batches(split.shards, 10, (1, 28, 28)),
                                  resolved.recipe.data.to_levels, 0, split.samples, progress=False)
    ranks = evaluate_on_two_ranks(resolved, pipeline, split)
    assert [r["images"] for r in ranks] == [50, 50] and whole["images"] == 50
    for result in ranks:
        assert result["test_bits_per_dim"] == pytest.approx(whole["test_bits_per_dim"], rel=1e-9)

    corrupt_png_in_place(folder / "test-000002.tar", 3)  # shard 2 of 5: rank 0's share
    with pytest.warns(UserWarning, match="test-000002.tar"):
        ranks = evaluate_on_two_ranks(resolved, pipeline, sources.load_split(resolved.recipe.data, "test"))
    for outcome in ranks:  # every rank stops, none waits for the others
        assert isinstance(outcome, sources.DataError) and str(outcome).startswith("eval: scored 49 of 50 test images")


# ----------------------------------------------------------------------------- warnings


def test_shards_and_skips_read_as_their_names(tmp_path):
    array = array_shards("fashion-mnist test", np.zeros((3, 1, 2, 2), np.uint8), None, size=2)
    assert [str(s) for s in array] == ["fashion-mnist test[0:2]", "fashion-mnist test[2:3]"]
    assert str(TarShard(str(tmp_path / "a.tar"), 5)) == str(tmp_path / "a.tar")
    shard = tmp_path / "bad.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("x.png", b"\x89PNG nonsense"), ("x.cls", b"1")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.warns(UserWarning) as caught:
        assert not [k for batch in exact_batches([TarShard(str(shard))], 2, (1, 2, 2)) for k in batch["keys"]]
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"skipped sample 'x' in {shard}: ") and "object at 0x" not in message, message


def test_palette_images_are_skipped_not_read_as_indices(tmp_path):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("P", (2, 2)).save(buffer, format="PNG")
    shard = TarShard(str(tmp_path / "p.tar"))
    record = ("k", {"png": buffer.getvalue()})
    skip = shard.decode(record, (1, 2, 2))
    assert "mode P" in str(skip), skip


# ----------------------------------------------------------------------------- recipe files


def test_endless_recipe_file_is_one_error_line_quickly(capsys):
    started = time.perf_counter()
    line = one_error(capsys, "check", "/dev/zero")
    assert time.perf_counter() - started < 20
    assert line == "error: /dev/zero: recipe is larger than 1 MiB; not a recipe file?"


def test_binary_recipe_file_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "model.pt"
    path.write_bytes(b'name = "x"\n\x80\x02\x8a\nbinary')
    line = one_error(capsys, "check", path)
    assert line == f"error: {path}: not UTF-8 text: byte 0x80 at offset 11; not a recipe file?"


def test_recipe_directory_is_one_error_line(tmp_path, capsys):
    line = one_error(capsys, "check", tmp_path)
    assert line == f"error: {tmp_path}: cannot read recipe (Is a directory)"


def test_huge_recipe_file_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "huge.toml"
    path.write_text("# padding\n" * 110_000)
    line = one_error(capsys, "check", path)
    assert line == f"error: {path}: recipe is larger than 1 MiB; not a recipe file?"
