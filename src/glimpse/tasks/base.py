"""What every glimpse task shares: its accepted batch kinds, the spec, and checkpoint contents."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from glimpse.data.spec import DataSpec
from glimpse.errors import ConfigError, TrainingDivergedError
from glimpse.prediction import Prediction, PredictionInputs, PredictionOptions
from glimpse.tasks.optim import adamw_with_decay_groups, warmup_cosine_schedule
from glimpse.utils.provenance import code_version


def plain(value: Any) -> Any:
    """OmegaConf containers to plain dicts and lists, so hyperparameters load with
    ``torch.load(weights_only=True)``."""
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


class GlimpseTask(L.LightningModule):
    """Base LightningModule.

    Subclasses set :attr:`ACCEPTS`, the batch kinds (:mod:`glimpse.batches`) they train on,
    and call ``save_hyperparameters()`` with ``spec`` among their arguments, so the checkpoint
    alone rebuilds them. :meth:`on_save_checkpoint` adds the run's resolved config and the code
    version under the key ``"glimpse"``.

    Inference on what a user names (``eval.py image=...``, ``text=``, ``prompt=``): a task lists
    those inputs in :attr:`PREDICTS_FROM` and implements :meth:`predict_inputs`
    (:mod:`glimpse.prediction`).
    """

    ACCEPTS: ClassVar[frozenset[str]] = frozenset()
    #: The eval.py inputs (``image``, ``text``, ``prompt``) this task predicts from.
    PREDICTS_FROM: ClassVar[frozenset[str]] = frozenset()
    #: Whether eval.py also predicts after the test split when it names no input (a language
    #: model's sample from its default prompt).
    PREDICTS_AFTER_TEST: ClassVar[bool] = False

    #: The resolved run config, set by :func:`glimpse.run.train`; saved in checkpoints.
    run_config: dict[str, Any] | None = None

    @property
    def spec(self) -> DataSpec:
        return DataSpec.from_dict(self.hparams["spec"])

    def configure_optimizers(self):
        """AdamW with warm-up and cosine decay stepped every optimizer step, from
        ``hparams.optimizer`` (lr, weight_decay, betas) and ``hparams.scheduler``
        (warmup_steps, min_lr_ratio)."""
        optimizer = adamw_with_decay_groups(self, **self.hparams["optimizer"])
        total = self.trainer.estimated_stepping_batches
        scheduler = warmup_cosine_schedule(optimizer, self.hparams["scheduler"], total)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def check_finite(self, loss: torch.Tensor) -> None:
        """Stop training, before the optimizer step, on a NaN or infinite loss."""
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"Training loss became {loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}); training stopped and the last checkpoint was "
                "kept. Lower optimizer.lr or set trainer.gradient_clip_val."
            )

    def predict_from(
        self, inputs: PredictionInputs, options: PredictionOptions
    ) -> list[Prediction]:
        """:meth:`predict_inputs` in eval mode without gradients, after checking that this task
        predicts from every input given (ConfigError naming those it takes otherwise)."""
        unsupported = [key for key in inputs.given if key not in self.PREDICTS_FROM]
        if unsupported:
            takes = ", ".join(f"{key}=" for key in sorted(self.PREDICTS_FROM)) or "no inputs"
            raise ConfigError(
                f"{type(self).__name__} does not predict from "
                f"{', '.join(key + '=' for key in unsupported)}; it takes {takes}."
            )
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self.predict_inputs(inputs, options)
        finally:
            self.train(was_training)

    def predict_inputs(
        self, inputs: PredictionInputs, options: PredictionOptions
    ) -> list[Prediction]:
        """One :class:`Prediction` per input; tasks with :attr:`PREDICTS_FROM` override this."""
        return []

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["glimpse"] = {
            "task": f"{type(self).__module__}.{type(self).__qualname__}",
            "config": self.run_config,
            "code_version": code_version(),
        }
