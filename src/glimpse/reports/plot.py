"""One metric's curves, a line per run, labelled by the config values that tell runs apart
(drawn by :func:`glimpse.plotting.curves.metric_curves_figure`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from glimpse.plotting.curves import Curve, metric_curves_figure
from glimpse.reports.differences import differing_keys, display_value
from glimpse.reports.runs import Run, check_metric


def run_labels(runs: Sequence[Run]) -> dict[str, str]:
    """Each run's legend label: its differing config values (``model=lstm, data=shakespeare``),
    or its name when nothing differs."""
    keys = differing_keys(runs)
    return {
        run.name: ", ".join(f"{key}={display_value(run, key)}" for key in keys) or run.name
        for run in runs
    }


def curves_figure(runs: Sequence[Run], metric: str) -> Figure:
    """``metric`` against the optimizer step, one line per run that has logged it (dashed while
    the run has not finished)."""
    check_metric(runs, metric)
    labels = run_labels(runs)
    curves = []
    for run in runs:
        points = run.series(metric)
        if points:
            steps, values = zip(*points, strict=True)
            curves.append(Curve(labels[run.name], steps, values, run.finished))
    return metric_curves_figure(curves, metric)


def curves_file(folder: Path, metric: str) -> Path:
    """Where the figure of ``metric`` goes: ``folder/curves_<metric, / as _>.png``."""
    return Path(folder) / f"curves_{metric.replace('/', '_')}.png"
