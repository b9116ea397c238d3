"""Pictures of a run, drawn with matplotlib (no pyplot: no global state, no display needed):
the training curves (``OUT/curves.png``) and the bits map (``spnkit eval --bits-map N``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullLocator

from spnkit.engine.out_folder import replace_file


def _save(figure: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    replace_file(path, buffer.getvalue())


def plot_curves(records: list[dict], path: Path) -> Figure:
    """One panel per stage: its training bits/dim (over the subpixels it models, as its loss
    is measured) against the step, on a log scale when it falls by more than 2x, and each
    evaluation's exact test figure for the stage on the same scale (records of ``"kind":
    "evaluation"`` with ``test_bits_per_subpixel``) as a marked point; the learning rate in grey
    on a second axis. Returns the figure."""
    training = [r for r in records if "stage" in r]
    evaluations = [r for r in records if r.get("kind") == "evaluation"]
    stages = list(dict.fromkeys(r["stage"] for r in training))
    figure = Figure(figsize=(5.5 * max(len(stages), 1), 4), layout="constrained")
    if not stages:
        figure.text(0.5, 0.5, "no training records", ha="center")
        _save(figure, path)
        return figure
    axes = figure.subplots(1, len(stages), squeeze=False)[0]
    for ax, stage in zip(axes, stages):
        rows = [r for r in training if r["stage"] == stage]
        steps, bits = [r["step"] for r in rows], [r["bits_per_dim"] for r in rows]
        ax.plot(steps, bits, color="tab:blue", label="training (batch estimate)")
        points = [(e["step"], e["test_bits_per_subpixel"][stage]) for e in evaluations
                  if stage in e.get("test_bits_per_subpixel", {})]
        if points:
            ax.plot(*zip(*points), "o", color="tab:red", label="test (exact)")
        values = [*bits, *(v for _, v in points)]
        if min(values) > 0 and max(values) / min(values) > 2:
            ax.set_yscale("log")  # ticks at round values all the same: a decade rarely fits in the range
            ax.yaxis.set_major_locator(MaxNLocator(8))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.set_title(f"stage {stage}")
        ax.set_xlabel("step")
        ax.set_ylabel("bits per subpixel of the stage")
        ax.grid(True, which="both", alpha=0.3)
        rates = [r["lr"] for r in rows if "lr" in r]
        if len(set(rates)) > 1:
            lr = ax.twinx()
            lr.plot(steps, rates, color="grey", alpha=0.5, drawstyle="steps-post", label="learning rate")
            lr.set_ylabel("learning rate", color="grey")
            lr.tick_params(axis="y", colors="grey")
        ax.legend(loc="upper right")
    _save(figure, path)
    return figure


def plot_bits_map(images: np.ndarray, bits: np.ndarray, path: Path, titles: list[str] | None = None) -> None:
    """``images [N, C, H, W]`` uint8 beside heatmaps of ``bits [N, H, W]``, the bits each pixel
    costs (all channels and stages), one row per image on one colour scale; ``titles`` name
    the rows (default: each image's bits/dim)."""
    n, c, h, w = images.shape
    figure = Figure(figsize=(6.4, 2.6 * n + 0.4), layout="constrained")
    axes = figure.subplots(n, 2, squeeze=False)
    top = float(np.percentile(bits, 99.5)) or 1.0
    shown = None
    for k in range(n):
        picture, heat = axes[k]
        picture.imshow(images[k, 0] if c == 1 else images[k].transpose(1, 2, 0), cmap="gray" if c == 1 else None,
                       vmin=0, vmax=255, interpolation="nearest")
        per_dim = bits[k].sum() / (c * h * w)
        picture.set_title(titles[k] if titles else f"test image {k}: {per_dim:.3f} bits/dim", fontsize=9)
        shown = heat.imshow(bits[k], cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        heat.set_title(f"bits per pixel (total {bits[k].sum():,.0f})", fontsize=9)
        for ax in (picture, heat):
            ax.set_xticks([])
            ax.set_yticks([])
    bar = figure.colorbar(shown, ax=axes[:, 1].tolist(), shrink=0.9 if n > 1 else 1.0)
    bar.set_label(f"bits per pixel ({c} channel{'s' if c > 1 else ''}, every stage)")
    _save(figure, path)


def bits_per_subpixel(shares: dict[str, float], dims: int, modelled: dict[str, int]) -> dict[str, float]:
    """Each stage's share of the system's bits/dim (over all ``dims`` of the image) as bits per
    subpixel it models (``modelled[stage]``), the measure of its training loss."""
    return {name: share * dims / modelled[name] for name, share in shares.items() if modelled.get(name)}

