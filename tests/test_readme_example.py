"""The README's Python example runs as written and builds a stage that passes the kit."""

import re
from pathlib import Path

from spnkit import testing

README = Path(__file__).parents[1] / "README.md"


def test_python_example_builds_a_working_stage():
    section = README.read_text().split("## Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    stage = namespace["stage"]
    assert stage.num_slices == 4 and stage.levels == 8
    testing.check_stage_causality(stage, max_subpixels=6)
