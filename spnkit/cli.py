"""The ``spnkit`` command. User mistakes end in ``error: ...`` lines on stderr and exit status 2,
never a traceback."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

import torch

from spnkit import bundled, cli_basics
from spnkit.core import build, plugins
from spnkit.core.errors import SpnkitError

USER_ERROR = 2


class UserError(SpnkitError):
    """A mistake the user can fix; the message is printed as ``error: <message>``."""


def _registry(args: argparse.Namespace) -> plugins.Registry:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            registry = plugins.load(strict=args.strict_plugins)
        except plugins.PluginError as exc:
            raise UserError(str(exc)) from None
    for failure in registry.failures:
        print(f"warning: {failure}", file=sys.stderr)
    return registry


def _resolved(args: argparse.Namespace) -> build.Resolved:
    return build.load(bundled.find(args.recipe), args.overrides, _registry(args), bases=[bundled.FOLDER])


def cmd_plugins(args: argparse.Namespace) -> None:
    registry = _registry(args)
    rows = [("kind", "name", "distribution", "version", "summary")]
    for kind in plugins.KINDS:
        for name in registry.names(kind):
            entry = registry.get(kind, name)
            rows.append((kind, name, entry.provider.distribution, entry.provider.version, entry.summary))
    print(_table(rows))


def cmd_check(args: argparse.Namespace) -> None:
    resolved = _resolved(args)
    recipe = resolved.recipe
    print(f"recipe {args.recipe}: valid; image {recipe.data.channels}x{recipe.data.height}x{recipe.data.width}, "
          f"{recipe.data.bits} bits, planes {resolved.quantizer().plane_bits}")
    total = 0
    for name, config in recipe.stages.items():
        with torch.device("meta"):
            stage = build.build_stage(resolved, name)
        count = sum(p.numel() for p in stage.parameters())
        total += count
        rows = [
            ("stage", name),
            ("plane", f"{config.plane} ({stage.levels} levels per subpixel)"),
            ("image", f"{stage.channels}x{stage.height}x{stage.width}"),
            ("slices", f"{stage.num_slices} of {stage.channels}x{stage.slice_height}x{stage.slice_width}"
                       + (f", first {stage.given_slices} given" if stage.given_slices else "")),
            ("encoder", _describe_part(stage.encoder)),
            ("decoder", _describe_part(stage.decoder)),
            ("conditioner", _describe_conditioner(resolved.stages[name].conditioner, stage.conditioner)),
            ("parameters", f"{count:,}"),
        ]
        print()
        print(_table(rows))
    print(f"\ntotal parameters: {total:,}")


def _describe_part(module: torch.nn.Module | None) -> str:
    if module is None:
        return "none"
    return f"{type(module).__name__} ({sum(p.numel() for p in module.parameters()):,} parameters)"


def _describe_conditioner(component: build.Component | None, module: torch.nn.Module | None) -> str:
    """``image_encoder (bottleneck=8, channels=32, layers=3; 22,920 parameters)``, or ``none``."""
    if component is None:
        return "none"
    table = component.table()
    options = ", ".join(f"{key}={value}" for key, value in table.items() if key != "plugin")
    return f"{table['plugin']} ({options}; {sum(p.numel() for p in module.parameters()):,} parameters)"


def cmd_show(args: argparse.Namespace) -> None:
    print(_resolved(args).to_toml(), end="")


def cmd_options(args: argparse.Namespace) -> None:
    from spnkit.core import options_reference

    registry = _registry(args)
    if args.name is None:
        sections = options_reference.recipe_sections() + options_reference.plugin_sections(registry)
    else:
        try:
            sections = options_reference.lookup(registry, args.name)
        except LookupError as exc:
            raise UserError(f"spnkit options: {exc.args[0]}") from None
    print(options_reference.render(sections), end="")


def cmd_export(args: argparse.Namespace) -> None:
    from spnkit.engine.export import export

    print(export(Path(args.run), Path(args.output), _registry(args)))


def _out(args: argparse.Namespace, resolved: build.Resolved) -> Path:
    from spnkit.engine.run import default_folder

    return Path(args.out) if args.out else default_folder(resolved, args.recipe)


def _backend(args: argparse.Namespace, resolved: build.Resolved):
    """The started backend (``--backend`` or the recipe's), as a context manager."""
    from spnkit.engine.runtime import started_backend

    return started_backend(resolved.recipe.runtime, _registry(args), args.backend)


def cmd_run(args: argparse.Namespace) -> None:
    from spnkit.engine import evaluate, run

    resolved = _resolved(args)
    out = _out(args, resolved)
    with _backend(args, resolved) as backend:
        summary = run.run(resolved, out, progress=not args.quiet, backend=backend)
    if backend.is_main:
        print(evaluate.describe(summary))
        print(f"wrote {out / 'summary.json'}, {out / 'samples.png'}, {out / 'curves.png'}, {out / 'metrics.jsonl'}")


def cmd_train(args: argparse.Namespace) -> None:
    from spnkit.engine import run

    resolved = _resolved(args)
    stages = args.stage or None
    for name in stages or []:
        if name not in resolved.recipe.stages:
            raise UserError(f"--stage: unknown stage {name!r}; the recipe has {', '.join(resolved.recipe.stages)}")
    out = _out(args, resolved)
    with _backend(args, resolved) as backend:
        run.train(resolved, out, stages, progress=not args.quiet, backend=backend)
    if backend.is_main:
        print(f"checkpoints in {out / 'stages'}")


def cmd_eval(args: argparse.Namespace) -> None:
    from spnkit.engine import evaluate, run
    from spnkit.engine.checkpoint import load_trained
    from spnkit.engine.out_folder import claim_for_all

    if args.bits_map is not None and not 1 <= args.bits_map <= 64:
        raise UserError(f"--bits-map: must be in [1, 64] test images, got {args.bits_map}")
    resolved = _resolved(args)
    out = _out(args, resolved)
    with _backend(args, resolved) as backend, claim_for_all(out, "eval", backend, shared=True):
        pipeline = load_trained(resolved, out).to(backend.device)
        result = run.evaluation(resolved, pipeline, progress=not args.quiet, backend=backend)
        if args.bits_map and backend.is_main:
            from spnkit.engine.bits_map import write_bits_map

            write_bits_map(resolved, pipeline, args.bits_map, out / "bits_map.png")
    if backend.is_main:
        print(json.dumps(result, indent=2) if args.json else evaluate.describe(result))
        if args.bits_map:
            print(f"wrote {out / 'bits_map.png'}", file=sys.stderr if args.json else sys.stdout)


def _labels(resolved: build.Resolved, wanted: list[str]) -> list[int]:
    """Labels for ``--class`` values: class names (any case), ids, or ``none`` (-1, "no label":
    ``p(x)`` of a model trained with ``drop_labels``)."""
    from spnkit.data.sources import load_split

    classes = resolved.classes
    if classes is None:
        raise UserError("--class: the recipe's stages are not class-conditional (no stage takes labels)")
    names = load_split(resolved.recipe.data, "test").classes or []
    labels = []
    for value in wanted:
        matches = [i for i, name in enumerate(names) if name.lower() == value.lower()]
        if matches:
            labels.append(matches[0])
        elif value.lower() == "none":
            _check_null_class(resolved)
            labels.append(-1)
        elif value.lstrip("-").isdigit() and 0 <= int(value) < classes:
            labels.append(int(value))
        else:
            known = f"; the classes are {', '.join(f'{i}: {n}' for i, n in enumerate(names))}" if names else ""
            raise UserError(f"--class: {value!r} is not a class name or an id in 0..{classes - 1}{known}")
    return labels


def _check_null_class(resolved: build.Resolved, option: str = "--class none") -> None:
    for name, plan in resolved.stages.items():
        conditioner = plan.conditioner
        if conditioner is None:
            continue
        if not getattr(conditioner.options, "null_class", False):
            raise UserError(f"{option}: stages.{name}.conditioner has no 'no label' row (null_class = false)")
        if not getattr(conditioner.options, "drop_labels", 0):
            warnings.warn(f"{option}: stages.{name}.conditioner was not trained without labels "
                          "(drop_labels = 0), so its 'no label' row is untrained", stacklevel=2)


def _check_sampling(args: argparse.Namespace) -> None:
    """``--temperature`` and ``--seed`` of a command that samples."""
    if args.temperature is not None and not 0 < args.temperature < math.inf:
        raise UserError(f"--temperature: must be a finite number > 0 (logits are divided by it), got {args.temperature}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise UserError(f"--seed: must be in [0, 4294967296), got {args.seed}")


def cmd_sample(args: argparse.Namespace) -> None:
    from spnkit.engine import images, run
    from spnkit.engine.checkpoint import load_trained
    from spnkit.engine.out_folder import claim, prepare, unused_name

    _check_sampling(args)
    if not 1 <= args.count <= 4096:
        raise UserError(f"--count: must be in [1, 4096], got {args.count}")
    resolved = _resolved(args)
    out = _out(args, resolved)
    complete = None
    if args.complete:
        data = resolved.recipe.data
        try:
            complete = images.load_image(Path(args.complete), data.channels)
        except OSError as exc:
            raise UserError(f"--complete: cannot read {args.complete} ({exc})") from None
        if complete.shape[1:] != (data.height, data.width):
            raise UserError(f"--complete: {args.complete} is {complete.shape[2]}x{complete.shape[1]}, "
                            f"the recipe's images are {data.width}x{data.height}")
    if args.interpolate and (args.complete or args.classes or args.guidance is not None or args.reference):
        raise UserError("--interpolate: cannot be combined with --complete, --class, --guidance or --reference")
    labels = _labels(resolved, args.classes) if args.classes else None
    if not 2 <= args.steps <= 64:
        raise UserError(f"--steps: must be in [2, 64] points along the line, got {args.steps}")
    if args.guidance is not None:
        if not math.isfinite(args.guidance):
            raise UserError(f"--guidance: must be a finite number, got {args.guidance}")
        if resolved.classes is None:
            raise UserError("--guidance: the recipe's stages are not class-conditional (no stage takes labels)")
        _check_null_class(resolved, "--guidance")
    target = _png_output(args.output) if args.output else None  # default: OUT/sampled-N.png, not the run's samples.png
    # writing into OUT: the folder's only user; writing elsewhere: a reader, beside other readers
    into_out = target is None or target.resolve().parent.is_relative_to(out.resolve())
    with claim(out, "sample", shared=not into_out):
        target = target or unused_name(out, "sampled", ".png")
        pipeline = load_trained(resolved, out)
        try:
            pipeline.completion_masks(args.keep, (resolved.recipe.data.channels, 2, 2))
        except ValueError as exc:
            raise UserError(f"--keep: {exc}") from None
        prepare(target.parent, "--output" if args.output else "--out", create=False)
        if args.interpolate:
            _interpolate(args, resolved, pipeline, target)
        else:
            run.save_samples(resolved, pipeline, args.count, target, labels, temperature=args.temperature,
                             complete=complete, seed=args.seed, keep=args.keep, reference=args.reference,
                             progress=not args.quiet, guidance=args.guidance)
    print(f"wrote {target}")


def _interpolate(args: argparse.Namespace, resolved: build.Resolved, pipeline, target: Path) -> None:
    """``spnkit sample --interpolate A B``: ``--count`` rows of ``--steps`` samples along the
    line between two codes (or vectors), the same noise in every column."""
    from spnkit.engine import autoencoder, images
    from spnkit.engine.out_folder import writing

    a, b = autoencoder.endpoints(resolved, pipeline, *args.interpolate)
    seed = resolved.recipe.seed if args.seed is None else args.seed
    drawn = autoencoder.interpolation(resolved, pipeline, a, b, args.steps, args.count, seed, args.temperature,
                                      progress=not args.quiet)
    with writing(target):
        images.save_grid(drawn, target, columns=args.steps)


def _png_output(output: str) -> Path:
    """``-o`` of a picture, checked before any work: a ``.png`` file name, not a folder."""
    target = Path(output)
    if target.is_dir():
        raise UserError(f"--output: {output} is a folder; name the PNG file to write (e.g. {target / 'grid.png'})")
    if target.suffix.lower() != ".png":
        raise UserError(f"--output: expected a .png file name, got {output!r}")
    return target


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from spnkit.engine import autoencoder, images
    from spnkit.engine.checkpoint import load_trained
    from spnkit.engine.out_folder import claim, prepare, writing

    _check_sampling(args)
    if not 1 <= args.samples <= 64:
        raise UserError(f"--samples: must be in [1, 64], got {args.samples}")
    # KEY=VALUE overrides follow the images (a file of that name is an image)
    args.overrides = [*(item for item in args.images if "=" in item and not Path(item).exists()), *args.overrides]
    args.images = [item for item in args.images if item not in args.overrides]
    if not args.images:
        raise UserError("reconstruct: no images given")
    resolved = _resolved(args)
    autoencoder.encoded_stages(resolved, "reconstruct")
    levels = autoencoder.read_images([Path(p) for p in args.images], resolved, "reconstruct")
    out = _out(args, resolved)
    target = _png_output(args.output)
    with claim(out, "reconstruct", shared=not target.resolve().parent.is_relative_to(out.resolve())):
        pipeline = load_trained(resolved, out)
        prepare(target.parent, "--output", create=False)
        seed = resolved.recipe.seed if args.seed is None else args.seed
        drawn = autoencoder.reconstructions(resolved, pipeline, levels, args.samples, seed, args.temperature,
                                            progress=not args.quiet)
        with writing(target):
            images.save_grid(drawn, target, columns=args.samples + 1)
    print(f"wrote {target}")


def cmd_shard(args: argparse.Namespace) -> None:
    from spnkit.data import writer

    geometry = writer.Geometry(args.size, args.resize)
    manifest = writer.write_shards([Path(s) for s in args.sources], Path(args.out_dir), geometry, args.split,
                                   args.shard_size, args.workers, progress=not args.quiet)
    shape = f"{manifest['channels']}x{manifest['height']}x{manifest['width']}"
    for name, split in manifest["splits"].items():
        shards = split["shards"]
        last = f"{{000000..{len(shards) - 1:06d}}}" if len(shards) > 1 else "000000"
        print(f"{name}: {split['samples']} images ({shape}) in {len(shards)} shards: "
              f"{Path(args.out_dir) / f'{name}-{last}.tar'}")
    if manifest["classes"]:
        print(f"classes: {', '.join(manifest['classes'])}")


def cmd_compress(args: argparse.Namespace) -> None:
    from spnkit.engine.compression import compress_files
    from spnkit.engine.run import default_folder

    if not 1 <= args.batch <= 4096:
        raise UserError(f"--batch: must be in [1, 4096], got {args.batch}")
    resolved = build.load(bundled.find(args.recipe), registry=_registry(args), bases=[bundled.FOLDER])
    if resolved.side is not None:
        raise UserError(f"{args.recipe}: its stages take {resolved.side}; the codec codes unconditional systems only")
    if resolved.encoded:
        raise UserError(f"{args.recipe}: stages {', '.join(resolved.encoded)} are given the code of their own input; "
                        "the codec codes unconditional systems only")
    run = Path(args.run) if args.run else default_folder(resolved, args.recipe)
    print(compress_files(resolved, run, [Path(p) for p in args.inputs], Path(args.output), args.batch,
                         progress=not args.quiet))


def cmd_decompress(args: argparse.Namespace) -> None:
    from spnkit.engine.compression import decompress_file

    print(decompress_file(Path(args.file), Path(args.output), _registry(args), Path(args.run) if args.run else None,
                          progress=not args.quiet))


def _table(rows: list[tuple]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage mistakes as one ``error:`` line."""

    def error(self, message: str):
        self.exit(USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="spnkit", description="Subscale Pixel Networks and the PixelCNN family.")
    top.add_argument("--strict-plugins", action="store_true", help="fail when a third-party plugin does not load")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("plugins", help="list installed plugins").set_defaults(func=cmd_plugins)
    options = commands.add_parser("options", help="every option of the recipe's sections and of each plugin")
    options.add_argument("name", nargs="?", metavar="NAME",
                         help="one recipe section (train, data, stages, ...) or plugin (hybrid, subscale, ...)")
    options.set_defaults(func=cmd_options)
    export = commands.add_parser("export", help="write a trained run's weights (safetensors) and recipe to share")
    export.add_argument("run", metavar="RUN_DIR", help="the trained run's folder (spnkit run --out)")
    export.add_argument("-o", "--output", required=True, metavar="DIR", help="a new or empty folder to write")
    export.set_defaults(func=cmd_export)
    shard = commands.add_parser("shard", help="write images into WebDataset shards and a manifest")
    shard.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="a folder of images (class_name/image.png gives labels), IDX files, .npy or .npz arrays")
    shard.add_argument("out_dir", metavar="OUT_DIR", help="folder for the shards and manifest.json")
    shard.add_argument("--size", type=int, help="output side in pixels (square; default: keep the source size)")
    shard.add_argument("--resize", choices=["area", "center-crop"], default="area",
                       help="area: box-filter the whole image (TensorFlow's resize_area); "
                            "center-crop: take the central square first")
    shard.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    shard.add_argument("--split", default="train=0.95,test=0.05",
                       help="NAME=FRACTION,... or NAME=COUNT,...,NAME=rest, or one NAME for everything")
    shard.add_argument("--workers", type=int, help="encoding processes (default: all cores)")
    shard.add_argument("--quiet", action="store_true", help="no progress bar")
    shard.set_defaults(func=cmd_shard)
    compress = commands.add_parser("compress", help="losslessly compress images with a trained system")
    compress.add_argument("recipe", help="path to the TOML recipe of the trained system")
    compress.add_argument("inputs", nargs="+", metavar="INPUT",
                          help="image files, folders of them, IDX files or .npy/.npz arrays, of the recipe's shape")
    compress.add_argument("-o", "--output", required=True, metavar="FILE", help="the compressed file to write")
    compress.add_argument("--run", help="the trained run's folder (default: runs/NAME)")
    compress.add_argument("--batch", type=int, default=16,
                          help="images coded together (default 16; the file keeps it: decoding one image "
                               "alone costs a batch's work)")
    compress.add_argument("--quiet", action="store_true", help="no progress bar")
    compress.set_defaults(func=cmd_compress)
    decompress = commands.add_parser("decompress", help="decode a compressed file into PNG images")
    decompress.add_argument("file", metavar="FILE", help="a file written by spnkit compress")
    decompress.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for NAME.png per image")
    decompress.add_argument("--run", help="the trained run's folder (default: the one the file names)")
    decompress.add_argument("--quiet", action="store_true", help="no progress bar")
    decompress.set_defaults(func=cmd_decompress)
    for name, func, text in [("check", cmd_check, "validate a recipe and size its stages"),
                             ("show", cmd_show, "print the resolved recipe as TOML")]:
        sub = commands.add_parser(name, help=text)
        sub.add_argument("recipe", help="path to a TOML recipe")
        sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a recipe field (VALUE is TOML)")
        sub.set_defaults(func=func)

    for name, func, text in [("run", cmd_run, "train every stage (or resume), evaluate, sample"),
                             ("train", cmd_train, "train stages (or resume)"),
                             ("eval", cmd_eval, "exact test bits/dim of trained stages"),
                             ("sample", cmd_sample, "sample a PNG grid from trained stages")]:
        sub = commands.add_parser(name, help=text)
        sub.add_argument("recipe", help="path to a TOML recipe")
        sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a recipe field (VALUE is TOML)")
        sub.add_argument("--out", help="output folder (default: runs/NAME)")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        if name != "sample":
            sub.add_argument("--backend", help="where to run: cpu, cuda, xla, ... (default: runtime.backend)")
        sub.set_defaults(func=func)
        if name == "train":
            sub.add_argument("--stage", action="append", help="train only this stage (repeatable)")
        if name == "eval":
            sub.add_argument("--json", action="store_true", help="print the result as JSON")
            sub.add_argument("--bits-map", type=int, metavar="N",
                             help="also draw OUT/bits_map.png: the first N test images beside the bits each "
                                  "pixel costs (exact, all channels and stages)")
        if name == "sample":
            sub.add_argument("--count", type=int, default=16,
                             help="number of images (per class for class-conditional recipes)")
            sub.add_argument("--temperature", type=float, help="divide every stage's logits by this")
            sub.add_argument("--complete", metavar="IMAGE", help="keep part of this PNG (see --keep), sample the rest")
            sub.add_argument("--keep", default="top",
                             help="with --complete: top (half), planes:K (most significant bit planes), slices:N")
            sub.add_argument("--seed", type=int, help="sampling seed (default: the recipe's)")
            sub.add_argument("--class", dest="classes", action="append", metavar="NAME|ID",
                             help="class-conditional recipes: sample this class, one grid row per class "
                                  "(repeatable; default: every class); 'none': no label")
            sub.add_argument("-o", "--output", help="PNG path (default: OUT/sampled-N.png, the first N free; "
                                                    "the run's own samples.png is kept)")
            sub.add_argument("--guidance", type=float, metavar="W",
                             help="class-conditional recipes trained with drop_labels: classifier-free guidance, "
                                  "logits (1+W) cond - W uncond per subpixel (0: plain conditional sampling)")
            sub.add_argument("--reference", action="store_true",
                             help="use the slow reference path (one full forward pass per subpixel)")
            sub.add_argument("--interpolate", nargs=2, metavar=("A", "B"),
                             help="continuous conditioners: --count rows of samples along the line between two "
                                  "codes, the same noise in each column; A, B: image files (image_encoder) or "
                                  "FILE.npy:ROW (vector)")
            sub.add_argument("--steps", type=int, default=8, help="with --interpolate: points along the line")
    reconstruct = commands.add_parser("reconstruct", help="auto-encoders: each image, then samples given its code")
    reconstruct.add_argument("recipe", help="path to a TOML recipe")
    reconstruct.add_argument("images", nargs="+", metavar="IMAGE", help="image files of the recipe's size")
    reconstruct.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=argparse.SUPPRESS)
    reconstruct.add_argument("--samples", type=int, default=8, help="samples given each image's code")
    reconstruct.add_argument("--temperature", type=float, help="divide every stage's logits by this")
    reconstruct.add_argument("--seed", type=int, help="sampling seed (default: the recipe's)")
    reconstruct.add_argument("--quiet", action="store_true", help="no progress bar")
    reconstruct.add_argument("--out", help="the trained run's folder (default: runs/NAME)")
    reconstruct.add_argument("-o", "--output", required=True, metavar="PNG", help="the grid: a row per image")
    reconstruct.set_defaults(func=cmd_reconstruct)
    return cli_basics.finish(top)


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args, extra = top.parse_known_args(argv)
    # KEY=VALUE overrides may also follow the options
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown or (extra and not hasattr(args, "overrides")):
        top.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    formatwarning, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        return _dispatch(args)
    finally:
        warnings.formatwarning = formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def _dispatch(args: argparse.Namespace) -> int:
    try:
        args.func(args)
        sys.stdout.flush()  # inside the try: a reader gone shows here, not at the interpreter's exit
    except SpnkitError as exc:  # only user mistakes: a bug keeps its traceback
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return USER_ERROR
    except BrokenPipeError:  # the reader left (`spnkit options | head`): stop quietly, as Python's
        # docs advise: stdout pointed at devnull so that the interpreter's last flush cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
