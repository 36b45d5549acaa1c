"""The table that papers print: one metric, runs laid out by two sets of config values."""

from __future__ import annotations

from collections.abc import Sequence

from glimpse.errors import ConfigError
from glimpse.reports.differences import ABSENT, differing_keys, display_value
from glimpse.reports.runs import Run, check_metric
from glimpse.reports.table import Cell, Table

#: ``--value``: a metric's last value, or its value at the best validation.
VALUES = ("last", "best")


def pivot_table(
    runs: Sequence[Run], rows: Sequence[str], cols: Sequence[str], metric: str, value: str = "last"
) -> Table:
    """``metric`` of every run, one row per combination of the ``rows`` keys' values and one
    column per combination of the ``cols`` keys' values (group choices such as ``model`` and
    ``data``, or config values such as ``model.optimizer.lr``), both in the order the runs come.

    ``value`` is ``last`` (the final value; for test metrics their only one) or ``best`` (at the
    validation with the best ``optimized_metric``). A cell no run fills is empty; two runs in one
    cell are an error naming them, since picking one would hide the other.
    """
    _check_keys(runs, [*rows, *cols])
    check_metric(runs, metric)
    row_labels = _labels(runs, rows)
    col_labels = _labels(runs, cols)
    cells: dict[tuple[str, str], Run] = {}
    for run in runs:
        place = (_label(run, rows), _label(run, cols))
        if place in cells:
            raise ConfigError(
                f"Runs {cells[place].name} and {run.name} both have {_describe(run, rows, cols)}; "
                f"add the key that tells them apart to --rows or --cols "
                f"(differing: {', '.join(differing_keys(runs)) or 'none'})."
            )
        cells[place] = run
    table_rows = []
    for row_label in row_labels:
        row = [Cell(row_label)]
        for col_label in col_labels:
            run = cells.get((row_label, col_label))
            number = None if run is None else _value(run, metric, value)
            row.append(Cell(number, metric=True, marked=run is not None and not run.finished))
        table_rows.append(row)
    notes = [f"{metric} ({value}); rows: {', '.join(rows)}; columns: {', '.join(cols)}"]
    if any(not run.finished for run in runs):
        notes.append("*: the run has not finished; its value so far")
    return Table([" / ".join(rows), *col_labels], table_rows, notes)


def _value(run: Run, metric: str, value: str) -> float | None:
    return run.at_best(metric) if value == "best" else run.last(metric)


def _label(run: Run, keys: Sequence[str]) -> str:
    return ", ".join(str(display_value(run, key)) for key in keys)


def _labels(runs: Sequence[Run], keys: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(_label(run, keys) for run in runs))


def _describe(run: Run, rows: Sequence[str], cols: Sequence[str]) -> str:
    return ", ".join(f"{key}={display_value(run, key)}" for key in [*rows, *cols])


def _check_keys(runs: Sequence[Run], keys: Sequence[str]) -> None:
    for key in keys:
        if all(display_value(run, key) == ABSENT for run in runs):
            raise ConfigError(
                f"No run has a config value {key!r}; use a config group (model, data) or a "
                f"dotted key such as model.optimizer.lr (differing here: "
                f"{', '.join(differing_keys(runs)) or 'none'})."
            )
