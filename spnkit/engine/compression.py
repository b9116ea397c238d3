"""``spnkit compress`` and ``spnkit decompress``: image files to one compressed file and back,
around ``spnkit.codec``.

The file keeps the images' names, the model's recipe (its data shape and bits, quantizer and
stages, which the fingerprint hashes with the weights) and the run folder it was made with, so
``decompress`` needs only the file (and ``--run`` when the run has moved). Both write through a
temporary file renamed into place, and ``decompress`` writes nothing until every image decoded
and matched its checksum.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from spnkit import codec
from spnkit.core import build
from spnkit.core.plugins import Registry
from spnkit.engine.checkpoint import load_trained
from spnkit.engine.image_inputs import NAME, read_inputs
from spnkit.engine.out_folder import OutputError, claim, prepare, reason, replace_file


def model_recipe(resolved: build.Resolved) -> str:
    """The parts of a recipe that make the model (data shape and bits, quantizer, stages in
    order) as JSON text: what the file keeps and the fingerprint hashes."""
    raw = resolved.to_dict()
    data = {key: raw["data"][key] for key in ("channels", "height", "width", "bits")}
    return json.dumps({"data": data, "quantizer": raw["quantizer"], "stages": raw["stages"]}, separators=(",", ":"))


def compress_files(resolved: build.Resolved, run: Path, inputs: list[Path], output: Path, chunk: int,
                   progress: bool = True) -> str:
    """Compress the images of ``inputs`` with the system trained in ``run`` into ``output``;
    returns a one-line summary."""
    levels, names = read_inputs(inputs, resolved.recipe.data)
    if output.is_dir():
        raise OutputError(f"-o {output} is a folder; name the file to write")
    prepare(output.parent, "-o", create=False)
    recipe = model_recipe(resolved)
    with claim(run, "compress", shared=True):
        pipeline = load_trained(resolved, run)
    about = {"names": names, "recipe": recipe, "run": str(run.resolve())}
    start = time.perf_counter()
    with tqdm(total=len(names), desc="compress", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        data = codec.compress(pipeline, levels, chunk=chunk, recipe=recipe, about=about, progress=bar.update)
    seconds = time.perf_counter() - start
    replace_file(output, data)
    bits = 8 * len(data) / levels.numel()
    return (f"wrote {output}: {len(names)} images in {len(data):,} bytes ({bits:.3f} bits/dim), "
            f"{len(names) / seconds:.2f} images/s")


def decompress_file(path: Path, out: Path, registry: Registry, run: Path | None = None,
                    progress: bool = True) -> str:
    """Decode every image of the compressed file ``path`` into ``out/NAME.png`` with the system of
    ``run`` (default: the run the file names); returns a one-line summary."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise codec.CodecError(f"cannot read {path} ({reason(exc)})") from None
    container = codec.read(data, str(path))
    names, recipe = container.about.get("names"), container.about.get("recipe")
    try:
        raw = json.loads(recipe)
    except (TypeError, ValueError):
        raw = None
    if (not isinstance(names, list) or len(names) != container.count or not isinstance(raw, dict)
            or not all(isinstance(n, str) and NAME.fullmatch(n) for n in names)):
        raise codec.CodecError(f"{path} has no valid image names or recipe: not written by spnkit compress "
                               "(spnkit.codec.decompress decodes files made in Python)")
    resolved = build.validate(raw, registry)
    stored = container.about.get("run")
    if run is None and not (isinstance(stored, str) and stored):
        raise codec.CodecError(f"{path} names no run folder: pass --run with the folder of the run it was made with")
    run = run or Path(stored)
    if not run.is_dir():
        raise codec.CodecError(f"{path} was made with the run folder {run}, which is not there: pass --run with "
                               "the folder of that run")
    prepare(out, "-o")
    with claim(run, "decompress", shared=True):
        pipeline = load_trained(resolved, run)
    start = time.perf_counter()
    with tqdm(total=container.count, desc="decompress", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        levels = codec.decompress(pipeline, data, recipe=recipe, progress=bar.update, name=str(path))
    seconds = time.perf_counter() - start
    pixels = resolved.recipe.data.to_pixels(levels).numpy()
    for name, image in zip(names, pixels):
        replace_file(out / f"{name}.png", _png(image))
    return f"wrote {container.count} images to {out}, {container.count / seconds:.2f} images/s"


def _png(image: np.ndarray) -> bytes:
    """``[C, H, W]`` uint8 -> PNG bytes (grey or RGB)."""
    buffer = io.BytesIO()
    Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()
