"""``python compare.py <sweep folder | run folders | glob>``: runs side by side, no server.

    python compare.py logs/train/multiruns/<sweep>                   # the comparison table
    python compare.py logs/train/multiruns/<sweep> --format markdown # or csv, json
    python compare.py 'logs/train/runs/*' --rows model --cols data --metric test/bpc
    python compare.py logs/train/multiruns/<sweep> --plot val/loss   # curves_val_loss.png

Reads each run's ``config_resolved.yaml``, Hydra's ``.hydra/hydra.yaml`` (the group choices) and
``metrics.jsonl``; works on sweeps that are still running or were interrupted. With an online
wandb (credentials) and runs that logged to it, the table is also logged to their wandb group.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from glimpse.errors import GlimpseError
from glimpse.reports.formats import FORMATS, render, rich_table
from glimpse.reports.pivot import VALUES, pivot_table
from glimpse.reports.runs import Run, find_runs, runs_folder
from glimpse.reports.table import comparison_table
from glimpse.utils.wandb_setup import wandb_mode

#: Messages go to stderr, tables to stdout (so ``> table.md`` works).
stderr = Console(stderr=True, soft_wrap=True)


def parser() -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(
        prog="compare.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    arguments.add_argument("runs", nargs="+", help="a sweep folder, run folders, or a glob")
    arguments.add_argument("--format", choices=FORMATS, default="rich")
    arguments.add_argument(
        "--metrics", help="comma-separated metrics to show (default: all shared)"
    )
    arguments.add_argument("--rows", help="pivot: comma-separated config keys of the rows")
    arguments.add_argument("--cols", help="pivot: comma-separated config keys of the columns")
    arguments.add_argument("--metric", help="pivot: the metric in the cells")
    arguments.add_argument("--value", choices=VALUES, default="last", help="pivot: which value")
    arguments.add_argument("--plot", metavar="METRIC", help="write the curves of METRIC as a PNG")
    arguments.add_argument(
        "--no-wandb", action="store_true", help="do not log the table to an online wandb"
    )
    return arguments


def compare(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` and print the table or pivot; write the plot when asked."""
    options = parser().parse_args(argv)
    pivot_options = (options.rows, options.cols, options.metric)
    if any(pivot_options) and not all(pivot_options):
        raise GlimpseError("A pivot needs all three of --rows, --cols and --metric.")
    runs = find_runs(options.runs)
    if all(pivot_options):
        table = pivot_table(
            runs, _keys(options.rows), _keys(options.cols), options.metric, options.value
        )
    else:
        table = comparison_table(runs, _keys(options.metrics) if options.metrics else None)
    if options.format == "rich":
        # A table as wide as it needs when stdout is a file, not cut to 80 columns.
        stdout = Console(width=None if sys.stdout.isatty() else 10_000)
        stdout.print(f"{len(runs)} runs in {runs_folder(runs)}", soft_wrap=True)
        stdout.print(rich_table(table))
        stdout.print("\n".join(table.notes), soft_wrap=True)
    else:
        sys.stdout.write(render(table, options.format))
    if options.plot:
        _plot(runs, options.plot)
    if not options.no_wandb and not all(pivot_options):
        _log_to_wandb(table, runs)


def _plot(runs: list[Run], metric: str) -> None:
    # Only when asked: glimpse.plotting loads matplotlib and torch, seconds a table does not need.
    from glimpse.plotting import save_figure
    from glimpse.reports.plot import curves_figure, curves_file

    target = save_figure(curves_figure(runs, metric), curves_file(runs_folder(runs), metric))
    missing = [run.name for run in runs if not run.series(metric)]
    if missing:
        stderr.print(f"No {metric} yet in: {', '.join(missing)} (no line drawn for them).")
    stderr.print(f"Curves of {metric}: {target}")


def _log_to_wandb(table, runs: list[Run]) -> None:
    if wandb_mode() != "online":
        return
    from glimpse.reports.wandb_table import log_comparison, uses_wandb  # wandb loads slowly

    if uses_wandb(runs):
        url = log_comparison(table, runs, runs_folder(runs))
        stderr.print(f"Logged to wandb: {url}")


def _keys(text: str) -> list[str]:
    return [key.strip() for key in text.split(",") if key.strip()]


def main() -> None:
    """The ``glimpse-compare`` command; mistakes in the arguments or the folders are one
    sentence and exit status 1."""
    try:
        compare()
    except GlimpseError as error:
        stderr.print(f"[bold red]error:[/bold red] {error}", highlight=False)
        sys.exit(1)
