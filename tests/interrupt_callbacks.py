"""Callbacks that tests put into runs through the config (`+callbacks.x._target_=...`)."""

from __future__ import annotations

import signal

import lightning as L
import torch


class InterruptAtStep(L.Callback):
    """Raise KeyboardInterrupt once ``step`` optimizer steps are done, like Ctrl-C would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


class NaNWeightsAtStep(L.Callback):
    """Fill the model's weights with NaN before optimizer step ``step``, so its loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.fill_(float("nan"))


class CtrlCAtStep(L.Callback):
    """Send this process SIGINT (a user's Ctrl-C) once optimizer step ``step`` is done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            signal.raise_signal(signal.SIGINT)
