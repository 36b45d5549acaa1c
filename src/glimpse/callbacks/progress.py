"""The rich progress bar, with a training description that reads right for step-limited runs."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Lightning's RichProgressBar, drawn on stderr with the logs (stdout carries only results,
    so ``python eval.py ... > sample.txt`` holds the sample alone). Its training bar reads
    ``Epoch 3 (to step 2400)`` when training is limited by steps (``max_epochs=-1``, where
    Lightning's would print ``Epoch 3/-2``), and ``Epoch 3/9`` when it is limited by epochs. The
    bar itself counts the epoch's batches; the description is drawn when an epoch starts."""

    def __init__(self, **kwargs: Any) -> None:
        console_kwargs = {"stderr": True, **(kwargs.pop("console_kwargs", None) or {})}
        super().__init__(console_kwargs=console_kwargs, **kwargs)

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        description = f"Epoch {current_epoch}"
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            description += f"/{trainer.max_epochs - 1}"
        if trainer.max_steps is not None and trainer.max_steps > 0:
            description += f" (to step {trainer.max_steps})"
        width = len(self.validation_description)
        return f"{description:{width}}" if width > len(description) else description
