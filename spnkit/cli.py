"""The ``spnkit`` command. User mistakes end in ``error: ...`` lines on stderr and exit status 2,
never a traceback."""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

from spnkit import build, plugins
from spnkit.recipe import RecipeError

USER_ERROR = 2


class UserError(Exception):
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
    return build.load(args.recipe, args.overrides, _registry(args))


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
            ("parameters", f"{count:,}"),
        ]
        print()
        print(_table(rows))
    print(f"\ntotal parameters: {total:,}")


def _describe_part(module: torch.nn.Module | None) -> str:
    if module is None:
        return "none"
    return f"{type(module).__name__} ({sum(p.numel() for p in module.parameters()):,} parameters)"


def cmd_show(args: argparse.Namespace) -> None:
    print(_resolved(args).to_toml(), end="")


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
    for name, func, text in [("check", cmd_check, "validate a recipe and size its stages"),
                             ("show", cmd_show, "print the resolved recipe as TOML")]:
        sub = commands.add_parser(name, help=text)
        sub.add_argument("recipe", help="path to a TOML recipe")
        sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a recipe field (VALUE is TOML)")
        sub.set_defaults(func=func)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except RecipeError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return USER_ERROR
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
