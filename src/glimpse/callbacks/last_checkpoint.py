"""``checkpoints/last.ckpt`` always holds the final state of training.

Lightning's ModelCheckpoint writes only at validation (or epoch ends), so a run that stops
between two validations (``trainer.max_steps``, ``max_time``, ``max_epochs``, Ctrl-C) would
leave ``last.ckpt`` behind its final step, or no checkpoint at all. :class:`LastCheckpoint` is a
monitor-free ModelCheckpoint that also writes when training ends. Ctrl-C ends training after
the current step (:mod:`glimpse.utils.interrupt`), so it ends this way too.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """``dirpath/<filename>.ckpt`` rewritten at every validation and at the end of training,
    unless it already holds the current step.

    Not ModelCheckpoint's ``save_last``: since Lightning 2.6 that copies only when a best
    checkpoint is written, so a run whose metric stopped improving would resume from its best
    step. A run stopped by an exception (a diverged loss, a second Ctrl-C) keeps its last good
    checkpoint: one written mid-step would not resume exactly.
    """

    def __init__(self, dirpath: str, filename: str = "last", **kwargs: Any) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
            **kwargs,
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_final_state(trainer)

    def _save_final_state(self, trainer: L.Trainer) -> None:
        if trainer.global_step == 0 or self._last_global_step_saved == trainer.global_step:
            return
        path = self.format_checkpoint_name(self._monitor_candidates(trainer))
        self._save_checkpoint(trainer, path)
