"""Every run's metrics as a small JSON-lines file, whichever logger the run uses."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from glimpse.run_folder import METRICS_FILE, append_metrics, read_metrics, write_metrics

log = logging.getLogger(__name__)

#: Lightning's names for the two halves of a metric logged with on_step and on_epoch.
_FORK_SUFFIXES = ("_step", "_epoch")


class MetricsFile(L.Callback):
    """Append one JSON object a line to ``dirpath/metrics.jsonl``:

    - ``{"stage": "train", "step": s, "epoch": e, "train/loss": ..., "lr-AdamW/pg1": ...}``
      every ``trainer.log_every_n_steps`` optimizer steps (the step's own values);
    - ``{"stage": "val", ...}`` after every validation (not the sanity check);
    - ``{"stage": "train_epoch", ...}`` at the end of every training epoch (epoch means of
      metrics logged with ``on_epoch``);
    - ``{"stage": "test", ...}`` after the test.

    The values are the trainer's ``callback_metrics``, so the file does not depend on the
    loggers the run has (or on having one). A run resumed from a checkpoint at step ``s`` first
    drops the records after ``s`` (and any test record): they belong to the training that the
    resumed run does again, so a run resumed in its own folder ends with the file an
    uninterrupted run writes. Written by global rank zero only.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self._last_train_step = -1

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        records = read_metrics(self.dirpath)
        kept = [r for r in records if r["stage"] != "test" and r["step"] <= trainer.global_step]
        if len(kept) < len(records):
            log.info(
                "%s: the %d records after step %d are dropped; this run logs those steps again.",
                self.dirpath / METRICS_FILE,
                len(records) - len(kept),
                trainer.global_step,
            )
        write_metrics(self.dirpath, kept)
        self._last_train_step = trainer.global_step

    @rank_zero_only
    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_train_step or step % trainer.log_every_n_steps:
            return
        self._last_train_step = step
        self._write(trainer, "train", _is_train_metric)

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, "val", lambda name: name.startswith("val/"))

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "train_epoch", _is_train_metric)

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "test", lambda name: name.startswith("test/"))

    def _write(self, trainer: L.Trainer, stage: str, wanted) -> None:
        metrics = _scalar_metrics(trainer.callback_metrics)
        values = {
            name: value
            for name, value in metrics.items()
            if wanted(name) and not _is_fork(name, metrics)
        }
        if values:
            record: dict[str, Any] = {
                "stage": stage,
                "step": trainer.global_step,
                "epoch": trainer.current_epoch,
            }
            append_metrics(self.dirpath, {**record, **dict(sorted(values.items()))})


def _is_train_metric(name: str) -> bool:
    """Everything but the evaluation splits: ``train/*`` and, e.g., the learning rates."""
    return not name.startswith(("val/", "test/"))


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items() if value.numel() == 1}


def _is_fork(name: str, metrics: dict[str, float]) -> bool:
    """``train/loss_step`` and ``train/loss_epoch`` when ``train/loss`` is there too."""
    return any(name.endswith(s) and name.removesuffix(s) in metrics for s in _FORK_SUFFIXES)
