"""Writing a :class:`~glimpse.reports.table.Table` as rich, markdown, CSV or JSON text."""

from __future__ import annotations

import csv
import io
import json
import math

from rich.table import Table as RichTable

from glimpse.reports.table import Table

FORMATS = ("rich", "markdown", "csv", "json")


def rich_table(table: Table) -> RichTable:
    """For a terminal: metric columns right-aligned (the notes are printed after it)."""
    shown = RichTable()
    metric_columns = {i for row in table.rows for i, cell in enumerate(row) if cell.metric}
    for i, column in enumerate(table.columns):
        shown.add_column(column, justify="right" if i in metric_columns else "left")
    for row in table.rows:
        shown.add_row(*(cell.text() for cell in row))
    return shown


def markdown(table: Table) -> str:
    """A GitHub-flavoured markdown table, then the notes."""
    metric_columns = {i for row in table.rows for i, cell in enumerate(row) if cell.metric}
    lines = [
        "| " + " | ".join(table.columns) + " |",
        "|"
        + "|".join("---:" if i in metric_columns else "---" for i in range(len(table.columns)))
        + "|",
    ]
    lines += [
        "| " + " | ".join(cell.text().replace("|", "\\|") for cell in row) + " |"
        for row in table.rows
    ]
    if table.notes:
        lines += [""] + [f"{note}." for note in table.notes]
    return "\n".join(lines) + "\n"


def csv_text(table: Table) -> str:
    """Raw values (a missing metric is empty); the status column tells unfinished runs."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows([["" if c.value is None else c.value for c in row] for row in table.rows])
    return buffer.getvalue()


def json_text(table: Table) -> str:
    """A list of objects, one a row, column name to raw value (null when missing or NaN)."""
    rows = [
        {column: _json_value(cell.value) for column, cell in zip(table.columns, row, strict=True)}
        for row in table.rows
    ]
    return json.dumps(rows, indent=2, default=str) + "\n"


def _json_value(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def render(table: Table, fmt: str) -> str:
    """``table`` as ``markdown``, ``csv`` or ``json`` text."""
    writers = {"markdown": markdown, "csv": csv_text, "json": json_text}
    return writers[fmt](table)
