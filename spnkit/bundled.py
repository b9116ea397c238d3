"""The recipes that ship with spnkit, as package data in ``spnkit/recipes`` (in a checkout, a
link to the repository's ``recipes/`` folder), so a pip-installed spnkit runs them from any
folder: a recipe argument that names no file but a bundled recipe (``quickstart``) means it."""

from __future__ import annotations

from pathlib import Path

from spnkit.core.errors import SpnkitError

FOLDER = Path(__file__).resolve().parent / "recipes"


class UnknownRecipe(SpnkitError):
    """A recipe argument that is neither a file nor the name of a bundled recipe."""


def names() -> list[str]:
    """The bundled recipes' names (file stems), sorted."""
    return sorted(path.stem for path in FOLDER.glob("*.toml"))


def summary(name: str) -> str:
    """The first line of a bundled recipe's opening comment (what it is), or ``""``."""
    for line in (FOLDER / f"{name}.toml").read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def find(recipe: str) -> str:
    """A recipe argument as a path: an existing file as given; else a bundled recipe's file for
    its bare name (``quickstart`` or ``quickstart.toml``). A missing file in a folder
    (``recipes/quickstart.toml`` run elsewhere) whose name is a bundled recipe's is an
    ``UnknownRecipe`` naming that recipe; any other missing file is returned as given (reading
    it reports it); a bare name of no file and no bundled recipe is an ``UnknownRecipe`` listing
    the bundled ones."""
    path = Path(recipe)
    if path.exists():
        return recipe
    stem = path.name.removesuffix(".toml")
    ships = (FOLDER / f"{stem}.toml").is_file()
    if path.parent != Path("."):
        if ships:
            raise UnknownRecipe(f"{recipe}: no such file; spnkit ships a recipe of that name: "
                                f"give it as {stem!r} (e.g. `spnkit run {stem}`)")
        return recipe
    if ships:
        return str(FOLDER / f"{stem}.toml")
    if path.suffix == ".toml":
        return recipe
    raise UnknownRecipe(f"{recipe}: no such recipe file, and no bundled recipe of that name "
                        f"(bundled: {', '.join(names())}; `spnkit recipes` lists them)")
