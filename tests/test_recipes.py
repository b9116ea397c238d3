"""Malformed recipes: every one exits 2 with `error:` lines naming the field, no traceback."""

import subprocess
import sys

import pytest
import tomli_w

from spnkit.core import build

from spnkit import cli
from spnkit.core.recipe import RecipeError


def base() -> dict:
    return {
        "name": "two-stage",
        "data": {"source": "fashion_mnist", "height": 8, "width": 8, "channels": 1, "bits": 8},
        "quantizer": {"plugin": "depth_split", "splits": [3, 5]},
        "stages": {
            "low": {
                "plane": 0,
                "ordering": {"plugin": "subscale", "factor": 2},
                "encoder": {"plugin": "slice_embedder", "conv_layers": 1, "channels": 8},
                "decoder": {"plugin": "pixelcnn", "layers": 2, "channels": 8},
            },
            "high": {
                "plane": 1,
                "conditions_on": ["low"],
                "ordering": {"plugin": "subscale", "factor": 2},
                "encoder": {"plugin": "slice_embedder", "conv_layers": 1, "channels": 8},
                "decoder": {"plugin": "gated_pixelcnn", "layers": 2, "channels": 8},
            },
        },
        "train": {"steps": 10, "batch_size": 4},
    }


def edit(path: str, value, recipe=None):
    recipe = recipe or base()
    *parents, last = path.split(".")
    node = recipe
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return recipe


DELETE = object()

# (description, recipe dict or raw TOML text, text that the first error line must contain[, the
# number of error lines when one mistake breaks two rules: 8x9 suits neither stage's S = 2])
CASES = [
    ("typo in a top-level key", edit("trian", {"steps": 1}), "trian: unknown key; did you mean 'train'?"),
    ("typo in a data key", edit("data.hieght", 8), "data.hieght: unknown key; did you mean 'height'?"),
    ("typo in a stage key", edit("stages.low.condition_on", []), "stages.low.condition_on: unknown key; did you mean 'conditions_on'?"),
    ("typo in a decoder option", edit("stages.low.decoder.layerz", 3), "stages.low.decoder.layerz: unknown key; did you mean 'layers'?"),
    ("typo in an ordering option", edit("stages.low.ordering.factr", 2), "stages.low.ordering.factr: unknown key; did you mean 'factor'?"),
    ("typo in a quantizer option", edit("quantizer.split", [3, 5]), "quantizer.split: unknown key"),
    ("typo in a train key", edit("train.step", 5), "train.step: unknown key; did you mean 'steps'?"),
    ("unknown decoder", edit("stages.low.decoder.plugin", "gated_pixelcn"), "stages.low.decoder.plugin: unknown decoder 'gated_pixelcn'; did you mean 'gated_pixelcnn'"),
    ("unknown ordering", edit("stages.low.ordering.plugin", "subscal"), "stages.low.ordering.plugin: unknown ordering 'subscal'; did you mean 'subscale'"),
    ("unknown encoder", edit("stages.high.encoder.plugin", "embedder"), "stages.high.encoder.plugin: unknown encoder 'embedder'"),
    ("unknown quantizer", edit("quantizer.plugin", "depth"), "quantizer.plugin: unknown quantizer 'depth'"),
    ("string for an int option", edit("stages.low.decoder.layers", "ten"), "stages.low.decoder.layers: expected int, got str 'ten'"),
    ("float for an int", edit("data.height", 8.0), "data.height: expected int, got float 8.0"),
    ("string for an int in data", edit("data.channels", "1"), "data.channels: expected int, got str '1'"),
    ("\"false\" for a bool", edit("stages.low.decoder.layers", False), "stages.low.decoder.layers: expected int, got bool False"),
    ("bool for an int", edit("train.steps", True), "train.steps: expected int, got bool True"),
    ("string for a float", edit("train.ema", "0.999"), "train.ema: expected float, got str '0.999'"),
    ("string for a list", edit("stages.high.conditions_on", "low"), "stages.high.conditions_on: expected an array, got str 'low'"),
    ("wrong type inside a list", edit("quantizer.splits", [3, "5"]), "quantizer.splits[1]: expected int, got str '5'"),
    ("component given as a string", edit("stages.low.decoder", "pixelcnn"), "stages.low.decoder: expected a table like"),
    ("component without plugin", edit("stages.low.decoder", {"layers": 2}), "stages.low.decoder: missing key \"plugin\""),
    ("missing data section", edit("data", DELETE), "data: required key missing"),
    ("missing quantizer section", edit("quantizer", DELETE), "quantizer: required key missing"),
    ("missing stages section", edit("stages", DELETE), "stages: required key missing"),
    ("missing decoder", edit("stages.low.decoder", DELETE), "stages.low.decoder: required key missing"),
    ("empty stages", edit("stages", {}), "stages: at least one stage is required"),
    ("S not dividing the size", edit("stages.low.ordering.factor", 3), "stages.low.ordering: image size 8x8 is not divisible by the subscale factor 3"),
    ("S not dividing a non-square size", edit("data.width", 9), "stages.low.ordering: image size 8x9 is not divisible by the subscale factor 2", 2),
    ("bit splits not summing to 8", edit("quantizer.splits", [3, 4]), "quantizer: splits [3, 4] sum to 7 bits but the data has 8"),
    ("invalid option value", edit("stages.low.ordering.factor", 0), "stages.low.ordering.factor: must be in [1, 256], got 0"),
    ("unknown stage referenced", edit("stages.high.conditions_on", ["lo"]), "stages.high.conditions_on[0]: unknown stage 'lo'; did you mean 'low'?"),
    ("later stage referenced", edit("stages.low.conditions_on", ["high"]), "stages.low.conditions_on[0]: stage 'high' does not come before 'low'"),
    ("conditioning missing", edit("stages.high.conditions_on", []), "stages.high.conditions_on: the stage needs plane 0"),
    ("plane out of range", edit("stages.high.plane", 2), "stages.high.plane: the quantizer makes 2 plane(s) (0..1), got 2"),
    ("plane modelled twice", edit("stages.high.plane", 0), "stages: stages low, high model some pixels of plane 0 twice", 2),
    ("plane modelled by nobody", edit("stages", {"low": base()["stages"]["low"]}), "stages: no stage models plane 1"),
    ("encoder missing for many slices", edit("stages.low.encoder", DELETE), "stages.low.encoder: required"),
    ("downsample not dividing", edit("stages.low.downsample", 3), "stages.low.downsample: must be a positive divisor"),
    ("given slices out of range", edit("stages.low.given_slices", 4), "stages.low.given_slices: must be in [0, 3]"),
    ("invalid TOML", "[data\nheight = 8", "invalid TOML"),
    ("duplicate TOML key", "[data]\nheight = 8\nheight = 9\n", "invalid TOML"),
    ("negative steps", edit("train.steps", -1), "train.steps: must be in [0, 1099511627776), got -1"),
    ("Polyak decay above 1", edit("train.ema", 1.5), "train.ema: must be in [0, 1) (0: no averaging; 1 would never move), got 1.5"),
    ("momentum of 1", edit("optimizer", {"momentum": 1.0}), "optimizer.momentum: must be in [0, 1), got 1.0"),
    ("negative learning rate", edit("schedule", {"learning_rate": [1e-3, -1e-4], "milestones": [5]}),
     "schedule.learning_rate[1]: must be > 0, got -0.0001"),
    ("milestones not matching the rates", edit("schedule", {"learning_rate": [1e-3, 1e-4]}),
     "schedule.milestones: 2 learning rate(s) need 1 milestone(s)"),
    ("milestones decreasing", edit("schedule", {"learning_rate": [1e-3, 1e-4, 1e-5], "milestones": [5, 3]}),
     "schedule.milestones: must be positive and increasing, got [5, 3]"),
    ("unknown precision", edit("runtime", {"precision": "fp16"}), 'runtime.precision: must be "auto" or "fp32" or "bf16", got \'fp16\''),
    ("a field that moved sections", edit("train.momentum", 0.9), "train.momentum: moved to optimizer.momentum"),
    ("zero logging interval", edit("logging", {"every": 0}), "logging.every: must be >= 1, got 0"),
    ("zero temperature", edit("stages.low.temperature", 0.0), "stages.low.temperature: must be > 0 (logits are divided by it), got 0.0"),
    ("zero image height", edit("data.height", 0), "data.height: must be in [1, 4096], got 0"),
    ("decoder option out of range", edit("stages.low.decoder.layers", 0), "stages.low.decoder.layers: must be in [1, 256], got 0"),
    ("accumulation not dividing the batch", edit("train.accumulate", 3), "train.accumulate: 3 micro-batches do not divide the batch of 4"),
    ("Polyak decay of 1 (a frozen average)", edit("train.ema", 1.0), "train.ema: must be in [0, 1) (0: no averaging; 1 would never move), got 1.0"),
    ("negative seed", edit("seed", -1), "seed: must be in [0, 4294967296), got -1"),
    ("huge seed", edit("seed", 2**63 - 1), "seed: must be in [0, 4294967296), got 9223372036854775807"),
    ("infinite learning rate", edit("schedule", {"learning_rate": [float("inf")]}), "schedule.learning_rate[0]: must be a finite number, got inf"),
    ("NaN learning rate", edit("schedule", {"learning_rate": [float("nan")]}), "schedule.learning_rate[0]: must be a finite number, got nan"),
    ("infinite temperature", edit("stages.low.temperature", float("inf")), "stages.low.temperature: must be a finite number, got inf"),
    ("infinite gradient clip", edit("optimizer", {"grad_clip": float("inf")}), "optimizer.grad_clip: must be a finite number, got inf"),
    ("an image too large to hold", edit("data.height", 2**40), "data.height: must be in [1, 4096], got 1099511627776"),
    ("more than 8 bits", edit("data.bits", 16), "data.bits: must be in [1, 8] (images are read as 8-bit), got 16"),
    ("a stage name that is a path", edit("stages", {"../x": base()["stages"]["low"], "high": base()["stages"]["high"]}),
     "stages: names must be letters, digits, '_' or '-' (a name is also a folder name), got '../x'"),
    ("an empty stage name", edit("stages", {"": base()["stages"]["low"], "high": base()["stages"]["high"]}),
     "stages: names must be letters, digits, '_' or '-' (a name is also a folder name), got ''"),
    ("a dotted stage name", edit("stages", {"a.b": base()["stages"]["low"], "high": base()["stages"]["high"]}),
     "stages: names must be letters, digits, '_' or '-' (a name is also a folder name), got 'a.b'"),
    ("fewer features than colours", edit("data.channels", 3, edit("stages.low.decoder.channels", 2)),
     "stages.low: channels (2) must be at least the image channels (3)"),
    ("a stage too large to allocate", edit("stages.low.decoder", {"plugin": "pixelcnn", "layers": 200, "channels": 16000}),
     "stages.low: 460,"),
    ("a run name that leaves runs/", edit("name", "../../elsewhere"),
     "name: must be letters, digits, spaces, '_', '-' or '.' and not only dots (it names the run's folder), got '../../elsewhere'"),
    ("a run name of dots", edit("name", ".."),
     "name: must be letters, digits, spaces, '_', '-' or '.' and not only dots (it names the run's folder), got '..'"),
    ("absurd layer count", edit("stages.low.decoder.layers", 10**7), "stages.low.decoder.layers: must be in [1, 256], got 10000000"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_recipe_exits_2_naming_the_field(case, tmp_path, capsys):
    _, recipe, expected, *count = case
    path = tmp_path / "recipe.toml"
    path.write_text(recipe if isinstance(recipe, str) else tomli_w.dumps(recipe))
    assert cli.main(["check", str(path)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == (count[0] if count else 1), err  # one line per problem, no follow-on noise
    assert all(line.startswith("error: ") for line in lines), err
    assert expected in lines[0], err
    assert "Traceback" not in err + out


def test_all_errors_are_reported_at_once():
    recipe = edit("data.height", "8", edit("stages.low.decoder.layers", "x", edit("stages.high.decoder.plugin", "nope")))
    with pytest.raises(RecipeError) as info:
        build.validate(recipe)
    text = "\n".join(info.value.problems)
    assert "data.height" in text and "stages.low.decoder.layers" in text and "stages.high.decoder.plugin" in text


def test_an_unknown_key_does_not_hide_the_other_mistakes_of_its_table():
    recipe = edit("stages.low.downsample", -3, edit("stages.low.bogus", 1, edit("train.stepz", 5,
                                                                                edit("train.batch_size", 0))))
    with pytest.raises(RecipeError) as info:
        build.validate(recipe)
    assert sorted(info.value.problems) == [
        "stages.low.bogus: unknown key; expected one of decoder, ordering, encoder, conditioner, plane, downsample, "
        "given_slices, conditions_on, temperature",
        "stages.low.downsample: must be in [1, 4096], got -3",
        "train.batch_size: must be in [1, 65536], got 0",
        "train.stepz: unknown key; did you mean 'steps'?",
    ]


def test_base_recipe_is_valid_and_show_round_trips(tmp_path, capsys):
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(base()))
    assert cli.main(["show", str(path)]) == 0
    shown = capsys.readouterr().out
    again = tmp_path / "again.toml"
    again.write_text(shown)
    assert build.load(str(again)).to_dict() == build.load(str(path)).to_dict()
    assert "filter_size" in shown  # defaults are filled in


def test_overrides_apply_before_validation(tmp_path, capsys):
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(base()))
    resolved = build.load(str(path), ["train.steps=7", "stages.low.decoder.layers=3", 'name="x y"'])
    assert resolved.recipe.train.steps == 7 and resolved.recipe.name == "x y"
    assert resolved.stages["low"].decoder.options.layers == 3
    # replacing a whole table drops the old keys
    resolved = build.load(str(path), ['stages.low.decoder={plugin="gated_pixelcnn", layers=1}'])
    assert resolved.stages["low"].decoder.entry.name == "gated_pixelcnn"
    assert cli.main(["check", str(path), "train.steps=ten"]) == 2
    assert "error: train.steps: expected int, got str 'ten'" in capsys.readouterr().err
    assert cli.main(["check", str(path), "trainsteps"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_missing_recipe_file(capsys):
    assert cli.main(["check", "no/such/recipe.toml"]) == 2
    assert capsys.readouterr().err.startswith("error: no/such/recipe.toml: cannot read recipe")


def test_no_traceback_from_a_real_process(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(edit("stages.low.decoder.layers", "ten")))
    done = subprocess.run([sys.executable, "-m", "spnkit.cli", "check", str(path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: stages.low.decoder.layers: expected int, got str 'ten'")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("flag,value,expected", [
    ("--temperature", "inf", "--temperature: must be a finite number > 0 (logits are divided by it), got inf"),
    ("--temperature", "nan", "--temperature: must be a finite number > 0 (logits are divided by it), got nan"),
    ("--seed", "-1", "--seed: must be in [0, 4294967296), got -1"),
    ("--seed", str(2**64), "--seed: must be in [0, 4294967296), got 18446744073709551616"),
    ("--count", "100000", "--count: must be in [1, 4096], got 100000"),
])
def test_sample_flags_out_of_range_are_one_error_line(flag, value, expected, tmp_path, capsys):
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(base()))
    assert cli.main(["sample", str(path), "--out", str(tmp_path / "run"), flag, value]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {expected}"]
