"""The report's and the ground truth's figures are legible at their default size: on no axis do two tick
labels overlap, and no legend covers a plotted point (checked on the drawn figures, with matplotlib's
own text extents), for inputs that used to break them (a few small steps, near-equal aggregates)."""

import os
import sys

import matplotlib
import matplotlib.figure
import numpy as np
import pytest

import ground_truth
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import report  # noqa: E402

matplotlib.use("Agg")


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the code saves, with its overlapping tick labels and covered points, read as it is
    saved (while its canvas can still render)."""
    figures = []
    save = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        save(fig, *args, **kwargs)
        fig.overlaps, fig.covered = overlaps(fig), legend_covers_points(fig)
        figures.append(fig)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return figures


def overlaps(fig) -> list[str]:
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            ticks = [
                t for t in axis.get_majorticklabels() + axis.get_minorticklabels() if t.get_visible() and t.get_text()
            ]
            boxes = sorted(
                ((t.get_window_extent(renderer), t.get_text()) for t in ticks), key=lambda b: (b[0].x0, b[0].y0)
            )
            for i, (a, text_a) in enumerate(boxes):
                for b, text_b in boxes[i + 1 :]:
                    if a.overlaps(b):
                        found.append(f"{ax.get_title()!r} {name}: {text_a!r} and {text_b!r}")
    return found


def legend_covers_points(fig) -> list[str]:
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        for line in ax.get_lines():
            xy = ax.transData.transform(np.column_stack(line.get_data()).astype(float))
            inside = (box.x0 < xy[:, 0]) & (xy[:, 0] < box.x1) & (box.y0 < xy[:, 1]) & (xy[:, 1] < box.y1)
            if inside.any():
                found.append(f"{ax.get_title()!r}: the legend covers {inside.sum()} points of {line.get_label()!r}")
    return found


def test_report_figures_have_legible_ticks(tmp_path, drawn):
    rows = [
        {"env_id": f"hopper-{k}", "diff": {"ddpm": (d, d - 5, d + 5), "meanflow": (d / 2, d / 2 - 5, d / 2 + 5)}}
        for k, d in (("medium", 1.0), ("medium-replay", 44.7), ("expert", -2.0), ("full-replay", 35.1))
    ]
    iqm = {
        "rebrac": (53.671, 53.668, 53.674),
        "ddpm": (53.6742, 53.6731, 53.6755),
        "meanflow": (53.6712, 53.67, 53.672),
    }
    report.plot_differences(str(tmp_path / "differences.png"), rows, iqm)
    steps = [10, 12, 14, 16, 18, 20]  # a smoke run's steps: once ticks read 0.01k, 0.012k, ...
    histories = {
        stage: {("hopper-medium-replay", s): [{"step": t, metric: 1.0 / t + s} for t in steps] for s in (0, 1)}
        for stage, metric in (
            ("rebrac", "score"),
            ("dynamics", "one_step_rmse"),
            ("meanflow", "one_step_rmse"),
            ("reward", "reward_rmse"),
        )
    }
    report.plot_training_curves(str(tmp_path / "training.png"), histories)
    big = {
        stage: {run: [{**h, "step": h["step"] * 10_000} for h in hist] for run, hist in runs.items()}
        for stage, runs in histories.items()
    }
    report.plot_training_curves(str(tmp_path / "training_big.png"), big)
    curves = [  # a ReBRAC curve and RMSE points close together on a log axis (labels once crowded there)
        {
            "env_id": "hopper-medium",
            "vary": "rebrac",
            "wm": wm,
            "step": step,
            "rmse": None,
            "rebrac": (20.0, 18.0, 22.0),
            "diff": (d, d - 3, d + 3),
        }
        for wm in ("ddpm", "meanflow")
        for step, d in ((25_000, 1.0), (50_000, -2.0), (100_000, 4.0), (200_000, 0.0))
    ] + [
        {"env_id": "hopper-medium", "vary": "dynamics", "wm": wm, "step": 0, "rmse": rmse, "diff": (1.0, 0.0, 2.0)}
        for wm in ("ddpm", "meanflow")
        for rmse in (0.21, 0.26, 0.29, 0.33, 0.38)
    ]
    report.plot_budget_curves(str(tmp_path / "budget.png"), curves)
    assert len(drawn) == 4
    for fig in drawn:
        assert fig.overlaps == []
    labels = [t.get_text() for t in drawn[1].axes[0].xaxis.get_majorticklabels() if t.get_text()]
    assert not any(label.startswith("0.") for label in labels), labels  # small steps as they are, not 0.01k


def test_ground_truth_figure_has_legible_ticks_and_an_uncovered_curve(tmp_path, drawn):
    n = 400
    t = np.arange(n)
    peak = np.exp(-(((t - 370) / 15.0) ** 2)) * 50  # a peak at the top right, where a legend once sat
    fell = np.zeros(n)
    fell[100:180] = 1  # a long run of falling probes: one fall
    steps = {
        "t": t,
        "imagined_before": np.zeros(n),
        "imagined_after": peak,
        "true_before": np.zeros(n),
        "true_after": peak * 0.8,
        "return_adapted": np.sin(t / 20),
        "return_pretrained": np.zeros(n),
        "fell_adapted": fell,
        "fell_pretrained": np.roll(fell, 150),
        "world_model_error": np.abs(np.cos(t / 30)),
        "q_adapted": np.ones(n),
        "target_adapted": np.zeros(n),
    }
    ground_truth.plot_episode(steps, str(tmp_path / "gt.png"))
    (fig,) = drawn
    assert fig.overlaps == [] and fig.covered == []
    falls = [c for c in fig.axes[1].collections if c.get_label() == "adapted ψ falls"]
    assert len(falls[0].get_offsets()) == 1  # one marker per fall, not one per probed step
