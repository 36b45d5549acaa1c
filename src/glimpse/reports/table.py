"""The comparison table: one row a run, its differing config values and its metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from glimpse.errors import ConfigError
from glimpse.reports.differences import differing_keys, display_value
from glimpse.reports.runs import Run

#: The splits whose metrics a comparison shows.
EVALUATION_SPLITS = ("val/", "test/")


@dataclass(frozen=True)
class Cell:
    """One value of a table: a metric (``metric``, None when the run has not logged it) or any
    other value; ``marked`` when it is a value so far of a run that has not finished."""

    value: Any
    metric: bool = False
    marked: bool = False

    def text(self) -> str:
        """The value as a table shows it: metrics to four decimals, ``*`` when marked."""
        if self.value is None:
            return "-"
        if self.metric:
            text = "nan" if math.isnan(self.value) else f"{self.value:.4f}"
        else:
            text = str(self.value)
        return text + ("*" if self.marked else "")


@dataclass
class Table:
    """Columns, rows of cells, and the notes that explain the marks."""

    columns: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)


def status(run: Run) -> str:
    """``done``, ``unfinished at step N``, or ``not started`` (no metrics yet)."""
    if run.finished:
        return "done"
    if run.last_step is None:
        return "not started"
    return f"unfinished at step {run.last_step}"


def shared_metrics(runs: Sequence[Run]) -> list[str]:
    """The val/ and test/ metrics that every run which logged that split logged (a run that has
    not reached its test yet does not hide the test metrics of the others), the optimized
    metric first, then val before test."""
    names: set[str] = set()
    for split in EVALUATION_SPLITS:
        logged = [{name for name in run.metric_names() if name.startswith(split)} for run in runs]
        logged = [split_names for split_names in logged if split_names]
        names |= set.intersection(*logged) if logged else set()
    target = runs[0].optimized_metric if runs else ""
    return sorted(names, key=lambda name: (name != target, not name.startswith("val/"), name))


def comparison_table(runs: Sequence[Run], metrics: Sequence[str] | None = None) -> Table:
    """One row a run, best first by ``optimized_metric`` (``optimized_mode``); columns: the
    run, its status, the config values that differ between the runs, then for every metric
    (``metrics``, or all the runs share): a val metric's last value and its value at the best
    validation, a test metric's value. An unfinished run's values so far are marked."""
    target, mode = _objective(runs)
    metrics = list(metrics) if metrics is not None else shared_metrics(runs)
    keys = differing_keys(runs)
    columns = ["run", "status", *keys]
    for name in metrics:
        columns += [f"{name} (last)", f"{name} (best)"] if name.startswith("val/") else [name]

    def sort_key(run: Run) -> tuple[bool, float]:
        best = run.at_best(target)
        return (best is None, 0.0 if best is None else (best if mode == "min" else -best))

    rows = []
    for run in sorted(runs, key=sort_key):
        row = [Cell(run.name), Cell(status(run))]
        row += [Cell(display_value(run, key)) for key in keys]
        for name in metrics:
            values = (
                [run.last(name), run.at_best(name)] if name.startswith("val/") else [run.last(name)]
            )
            row += [Cell(v, metric=True, marked=not run.finished and v is not None) for v in values]
        rows.append(row)
    notes = [
        f"sorted by the best {target} ({mode}); (best): at the validation with the best {target}"
    ]
    if any(not run.finished for run in runs):
        notes.append("*: the run has not finished; its values so far")
    return Table(columns, rows, notes)


def _objective(runs: Sequence[Run]) -> tuple[str, str]:
    objectives = {(run.optimized_metric, run.optimized_mode) for run in runs}
    if len(objectives) > 1:
        listed = ", ".join(f"{metric} ({mode})" for metric, mode in sorted(objectives))
        raise ConfigError(
            f"The runs optimise different metrics ({listed}); compare runs that share "
            "optimized_metric and optimized_mode."
        )
    return objectives.pop() if objectives else ("", "min")
