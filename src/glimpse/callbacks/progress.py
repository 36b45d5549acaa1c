"""The rich progress bar, with a training description that reads right for step-limited runs."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Lightning's RichProgressBar; its training bar reads ``Epoch 3 (to step 2400)`` when
    training is limited by steps (``max_epochs=-1``, where Lightning's would print
    ``Epoch 3/-2``), and ``Epoch 3/9`` when it is limited by epochs. The bar itself counts the
    epoch's batches; the description is drawn when an epoch starts."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        description = f"Epoch {current_epoch}"
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            description += f"/{trainer.max_epochs - 1}"
        if trainer.max_steps is not None and trainer.max_steps > 0:
            description += f" (to step {trainer.max_steps})"
        width = len(self.validation_description)
        return f"{description:{width}}" if width > len(description) else description
