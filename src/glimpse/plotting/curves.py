"""Metric curves of several runs on one chart (``python compare.py --plot val/loss``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure


@dataclass(frozen=True)
class Curve:
    """One run's values of a metric against the optimizer step; ``finished`` False draws it
    dashed."""

    label: str
    steps: Sequence[int]
    values: Sequence[float]
    finished: bool = True


def metric_curves_figure(curves: Sequence[Curve], metric: str) -> Figure:
    """``metric`` against the step, one line a curve, in the order given, with a legend."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for curve in curves:
        axes.plot(
            curve.steps,
            curve.values,
            marker="." if len(curve.steps) < 30 else None,
            linestyle="-" if curve.finished else "--",
            label=curve.label if curve.finished else f"{curve.label} (unfinished)",
        )
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure
