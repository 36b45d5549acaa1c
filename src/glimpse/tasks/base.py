"""What every glimpse task shares: its accepted batch kinds, the spec, and checkpoint contents."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from glimpse.data.spec import DataSpec
from glimpse.tasks.optim import adamw_with_decay_groups, warmup_cosine_schedule
from glimpse.errors import TrainingDivergedError
from glimpse.utils.provenance import code_version


def plain(value: Any) -> Any:
    """OmegaConf containers to plain dicts and lists, so hyperparameters load with
    ``torch.load(weights_only=True)``."""
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


class GlimpseTask(L.LightningModule):
    """Base LightningModule.

    Subclasses set :attr:`ACCEPTS`, the batch kinds (:mod:`glimpse.data.spec`) they train on,
    and call ``save_hyperparameters()`` with ``spec`` among their arguments, so the checkpoint
    alone rebuilds them. :meth:`on_save_checkpoint` adds the run's resolved config and the code
    version under the key ``"glimpse"``.
    """

    ACCEPTS: ClassVar[frozenset[str]] = frozenset()

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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["glimpse"] = {
            "task": f"{type(self).__module__}.{type(self).__qualname__}",
            "config": self.run_config,
            "code_version": code_version(),
        }
