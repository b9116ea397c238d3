"""What the ``spnkit`` command says about itself: its version (``--version``), examples under
every subcommand's ``--help``, shell completion scripts (``spnkit completion SHELL``, made by
shtab from the parser itself, so they know every subcommand and option), and the recipes that
ship with it (``spnkit recipes``)."""

from __future__ import annotations

import argparse
import importlib.metadata

import shtab

from spnkit import bundled

EXAMPLES = {
    "plugins": ["spnkit plugins", "spnkit --strict-plugins plugins      # a plugin that fails to load is an error"],
    "options": ["spnkit options", "spnkit options hybrid      # one plugin's options",
                "spnkit options train       # one recipe section"],
    "export": ["spnkit export runs/quickstart -o quickstart-model     # then spnkit.load(\"quickstart-model\")"],
    "shard": ["spnkit shard ~/celeba-hq data/celebahq256 --size 256 --split train=27000,test=rest",
              "spnkit shard /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz data/fmnist --split test"],
    "compress": ["spnkit compress recipes/quickstart.toml shirts/ fm_003.png -o set.spnz --run runs/quickstart"],
    "decompress": ["spnkit decompress set.spnz -o restored/"],
    "check": ["spnkit check recipes/celebahq256.toml",
              "spnkit check recipes/quickstart.toml 'stages.low.decoder={plugin=\"pixelcnn\", layers=3}'"],
    "show": ["spnkit show recipes/quickstart.toml train.steps=50"],
    "run": ["spnkit run recipes/quickstart.toml",
            "spnkit run recipes/quickstart.toml train.steps=200 --out runs/short --quiet"],
    "train": ["spnkit train recipes/quickstart.toml --stage high --out runs/qs"],
    "eval": ["spnkit eval recipes/quickstart.toml --json",
             "spnkit eval recipes/quickstart.toml --bits-map 6     # and OUT/bits_map.png: where the bits go"],
    "sample": ["spnkit sample recipes/quickstart.toml --count 16 --temperature 0.9 -o grid.png",
               "spnkit sample recipes/quickstart.toml --complete garment.png --keep planes:1",
               "spnkit sample recipes/quickstart_conditional.toml --class Sneaker --class 8",
               "spnkit sample recipes/quickstart_guidance.toml --class Sneaker --guidance 2",
               "spnkit sample recipes/fashion_autoencoder.toml --interpolate shoe.png bag.png --steps 8"],
    "reconstruct": ["spnkit reconstruct recipes/fashion_autoencoder.toml shoe.png bag.png --samples 8 -o grid.png"],
    "recipes": ["spnkit recipes", "spnkit recipes quickstart > mine.toml     # a copy to edit",
                "spnkit run quickstart train.steps=200      # a bundled recipe by its name, from any folder"],
    "completion": ["spnkit completion bash > ~/.local/share/bash-completion/completions/spnkit",
                   "spnkit completion zsh > ~/.zfunc/_spnkit     # a folder on your $fpath"],
}


def version() -> str:
    """The installed distribution's version (``unknown`` when spnkit runs from a bare source tree)."""
    try:
        return importlib.metadata.version("spnkit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


FILES = ("recipe", "inputs", "sources", "file", "complete", "output", "images", "interpolate")  # completed as paths
FOLDERS = ("out", "out_dir", "run")


def _commands(top: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(action for action in top._actions if isinstance(action, argparse._SubParsersAction))


def subcommands(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``{name: parser}`` of ``top``'s subcommands."""
    return dict(_commands(top).choices)


def finish(top: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--version`` and the ``completion`` subcommand to ``top``, mark path arguments for
    completion, and put each subcommand's examples under its ``--help``."""
    top.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    listing = _commands(top).add_parser("recipes", help="list the recipes that ship with spnkit, or print one")
    listing.add_argument("name", nargs="?", choices=bundled.names(), metavar="NAME",
                         help="print this recipe (its TOML, comments included)")
    listing.set_defaults(func=show_recipes)
    completion = _commands(top).add_parser("completion", help="print a shell completion script for spnkit")
    completion.add_argument("shell", choices=shtab.SUPPORTED_SHELLS, help="the shell to complete in")
    completion.set_defaults(func=lambda args: print(shtab.complete(top, args.shell), end=""))
    for name, sub in subcommands(top).items():
        for action in sub._actions:
            if action.dest in FILES:
                action.complete = shtab.FILE
            elif action.dest in FOLDERS:
                action.complete = shtab.DIRECTORY
        examples = EXAMPLES.get(name)
        if examples:
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
            sub.epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    return top


def show_recipes(args: argparse.Namespace) -> None:
    """``spnkit recipes``: each bundled recipe's name and what it is; ``spnkit recipes NAME``: its text."""
    if args.name:
        print((bundled.FOLDER / f"{args.name}.toml").read_text(), end="")
        return
    names = bundled.names()
    width = max(map(len, names))
    for name in names:
        print(f"{name.ljust(width)}  {bundled.summary(name)}".rstrip())
    print(f"\n(in {bundled.FOLDER}; `spnkit run NAME` runs one from any folder)")
