"""Hostile recipes: random mutations of a small valid recipe and of its overrides (types, ranges,
names, nesting). Every one either validates and then trains a step of every stage, or ends in
`error:` lines with exit status 2; never a traceback."""

import contextlib
import copy
import io
import math

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spnkit import cli
from test_engine import RECIPE

HOSTILE = [-1, 0, 1, 2, 3, 2**31, 2**63 - 1, -(2**63), 0.0, -0.0, 0.5, 1.0, 1e-300, 1e300, math.nan, math.inf,
           -math.inf, "", "x", "../x", "/abs", "a.b", "low", True, False, [], [1], ["low"], [0.5, "x"], {},
           {"plugin": "x"}, {"plugin": "pixelcnn"}, {"a": 1}]


def leaf_paths(node, prefix=()):
    """Every key path of a nested dict, tables and leaves alike."""
    for key, value in node.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from leaf_paths(value, (*prefix, key))


@st.composite
def mutation(draw, recipe):
    paths = list(leaf_paths(recipe))
    path = draw(st.sampled_from(paths))
    kind = draw(st.sampled_from(["set", "delete", "rename", "nest", "new key", "override"]))
    return kind, path, draw(st.sampled_from(HOSTILE)), draw(st.sampled_from(["layres", "x", "../y", "", "steps"]))


def apply(recipe: dict, overrides: list[str], change) -> None:
    kind, path, value, name = change
    value = copy.deepcopy(value)  # HOSTILE's tables are shared: one put into a recipe twice could nest itself
    node = recipe
    for key in path[:-1]:
        node = node[key]
    last = path[-1]
    if kind == "set":
        node[last] = value
    elif kind == "delete":
        del node[last]
    elif kind == "rename":
        node[name] = node.pop(last)
    elif kind == "nest":
        node[last] = {"inner": node[last]} if not isinstance(node[last], dict) else [node[last]]
    elif kind == "new key":
        node[name] = value
    else:
        text = tomli_w.dumps({"v": value})[4:].strip() if value not in ([], {}) else str(value)
        overrides.append(f"{'.'.join(map(str, path))}={text}")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_mutated_recipe_trains_or_ends_in_error_lines(data, tmp_path_factory):
    recipe, overrides = copy.deepcopy(RECIPE), []
    for _ in range(data.draw(st.integers(1, 3))):
        change = data.draw(mutation(recipe))
        try:
            apply(recipe, overrides, change)
        except (KeyError, TypeError):  # an earlier mutation removed or replaced that path
            continue
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "recipe.toml"
    try:
        path.write_text(tomli_w.dumps(recipe))
    except (TypeError, ValueError):  # not expressible as TOML (e.g. a list of tables and values)
        return
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["train", str(path), "--out", str(folder / "out"), "--quiet", *overrides,
                         "train.steps=1"])
    lines = err.getvalue().strip().splitlines()
    assert code in (0, 2), (code, recipe, overrides, err.getvalue())
    if code == 2:
        assert lines and all(line.startswith(("error: ", "warning: ")) for line in lines), err.getvalue()
        assert any(line.startswith("error: ") for line in lines)
