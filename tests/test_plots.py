"""The pictures of a run: where the bits go (exact, per subpixel, summing to the system's NLL)
and the training curves (a panel per stage, axes titled, evaluations marked)."""

import math

import numpy as np
import pytest
import torch

from spnkit.core import build
from spnkit.engine import plots
from spnkit.engine.bits_map import subpixel_bits
from test_pipeline import THREE_STAGES, TWO_STAGES


@pytest.mark.parametrize("raw", [TWO_STAGES, THREE_STAGES], ids=["depth", "size+depth"])
def test_bits_of_every_subpixel_sum_to_the_exact_nll(raw):
    torch.manual_seed(0)
    pipeline = build.build_pipeline(build.validate(raw)).eval()
    data = raw["data"]
    x = torch.randint(0, 2 ** data["bits"], (3, 1, data["height"], data["width"]))
    bits = subpixel_bits(pipeline, x)
    assert bits.shape == x.shape and bool((bits > 0).all())  # every subpixel is modelled by some stage
    with torch.no_grad():
        nll = -sum(pipeline.log_prob(x).values()).double() / math.log(2)
    assert torch.allclose(bits.sum(dim=(1, 2, 3)), nll, rtol=1e-5)


def test_curves_have_a_titled_panel_per_stage_and_mark_each_evaluation(tmp_path):
    records = [{"stage": stage, "step": step, "bits_per_dim": 4.0 / step, "lr": 1e-3 if step < 20 else 1e-4}
               for stage in ("low", "high") for step in (10, 20, 30)]
    records.append({"kind": "evaluation", "step": 30, "test_bits_per_dim": 0.5, "stages": {"low": 0.1, "high": 0.4},
                    "test_bits_per_subpixel": {"low": 0.12, "high": 0.4}})
    figure = plots.plot_curves(records, tmp_path / "curves.png")
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["stage low", "stage high"]
    for ax, test in zip(panels, (0.12, 0.4)):
        assert ax.get_xlabel() == "step" and "bits" in ax.get_ylabel()
        assert ax.get_yscale() == "log"  # the curve falls 3x
        marked = [line for line in ax.get_lines() if line.get_marker() == "o"]
        assert [tuple(np.ravel(line.get_xydata())) for line in marked] == [(30, test)]
    assert len(figure.axes) == 4  # each panel's learning rate on its own axis
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bits_of_a_conditional_system_are_given_each_images_label():
    import copy

    raw = copy.deepcopy(TWO_STAGES)
    for stage in raw["stages"].values():
        stage["conditioner"] = {"plugin": "class_embedding", "classes": 3, "channels": 4}
    torch.manual_seed(0)
    pipeline = build.build_pipeline(build.validate(raw)).eval()
    for stage in pipeline.stages.values():  # conditioners start at h = 0: make the label matter
        for parameter in stage.conditioner.parameters():
            torch.nn.init.normal_(parameter)
    x = torch.randint(0, 4, (3, 1, 2, 2))
    labels = torch.tensor([0, 1, 2])
    bits = subpixel_bits(pipeline, x, labels).sum(dim=(1, 2, 3))
    with torch.no_grad():
        nll = -sum(pipeline.log_prob(x, labels).values()).double() / math.log(2)
        other = -sum(pipeline.log_prob(x, (labels + 1) % 3).values()).double() / math.log(2)
    assert torch.allclose(bits, nll, rtol=1e-5) and not torch.allclose(bits, other, rtol=1e-3)
