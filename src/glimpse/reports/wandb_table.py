"""The comparison table as a Weights & Biases Table in the sweep's group."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import wandb

from glimpse.reports.runs import Run
from glimpse.reports.table import Table


def to_wandb_table(table: Table) -> wandb.Table:
    """Raw values (a missing or NaN metric is None), columns as in ``table``."""
    data = [[_plain(cell.value) for cell in row] for row in table.rows]
    return wandb.Table(columns=table.columns, data=data)


def uses_wandb(runs: list[Run]) -> bool:
    """Whether the runs logged to Weights & Biases (``logger=wandb`` or ``logger=many``)."""
    return any("logger.wandb._target_" in run.config for run in runs)


def log_comparison(table: Table, runs: list[Run], sweep_folder: Path) -> str:
    """Log ``table`` as ``comparison`` in a run of its own, ``compare``, in the group the sweep's
    runs share (``logger.wandb.group``, by default the sweep folder's name as ``train.py`` sets
    it) of their wandb project; returns the run's URL. Only for an online wandb."""
    config = runs[0].config
    experiment = wandb.init(
        project=config.get("logger.wandb.project") or "glimpse",
        group=config.get("logger.wandb.group") or Path(sweep_folder).name,
        job_type="compare",
        name="compare",
        dir=str(sweep_folder),
    )
    experiment.log({"comparison": to_wandb_table(table)})
    url = experiment.url
    experiment.finish()
    return url


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value
