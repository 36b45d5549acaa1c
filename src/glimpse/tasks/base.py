"""What every glimpse task shares: its accepted batch kinds, the spec, and checkpoint contents."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from glimpse.data.spec import DataSpec
from glimpse.errors import ConfigError, TrainingDivergedError
from glimpse.models.momentum import cosine_schedule
from glimpse.optim.param_groups import decay_groups, is_decayed
from glimpse.optim.schedules import scaled_lr, warmup_cosine_schedule
from glimpse.optim.settings import OptimizerSettings, build_optimizer
from glimpse.prediction import Prediction, PredictionInputs, PredictionOptions
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

    Optimization: ``hparams.optimizer`` is read in the one dialect of
    :mod:`glimpse.optim.settings` (AdamW or LARS, the linear scaling rule with
    ``lr_batch_size``, a cosine weight decay with ``weight_decay_end``). A task changes what is
    optimized by overriding :meth:`parameter_groups` and the schedule by :meth:`lr_schedule`.

    Speed: with ``model.compile=true`` the submodules named in :attr:`NETWORKS` are compiled
    (:mod:`glimpse.tasks.acceleration`).

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
    #: The submodules (dotted names) that compute, compiled with ``model.compile=true``
    #: (:mod:`glimpse.tasks.acceleration`).
    NETWORKS: ClassVar[tuple[str, ...]] = ("net",)

    #: The resolved run config, set by :func:`glimpse.run.train`; saved in checkpoints.
    run_config: dict[str, Any] | None = None
    #: Optimizer steps of the fit, the length of the schedules; set by configure_optimizers.
    total_steps: int = 1

    @property
    def spec(self) -> DataSpec:
        return DataSpec.from_dict(self.hparams["spec"])

    # Optimization ------------------------------------------------------------------------

    @property
    def optimizer_settings(self) -> OptimizerSettings:
        """``hparams.optimizer`` checked (ConfigError naming a wrong key or value)."""
        return OptimizerSettings.from_config(self.hparams["optimizer"])

    def parameter_groups(self, settings: OptimizerSettings) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: every trained parameter, matrices decayed
        (:func:`~glimpse.optim.param_groups.decay_groups`)."""
        return decay_groups(self, settings.weight_decay)

    def lr_schedule(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Lightning's ``lr_scheduler`` entry (None for a constant rate): a linear warm-up and
        cosine decay over :attr:`total_steps`, stepped every optimizer step, from
        ``hparams.scheduler`` (``warmup_steps``, ``min_lr_ratio``)."""
        return warmup_cosine_schedule(optimizer, self.hparams["scheduler"], self.total_steps)

    def global_batch_size(self) -> int:
        """Examples per optimizer step over every process: the train loader's batch size times
        the world size and the gradient accumulation."""
        trainer = self.trainer
        batch_size = getattr(trainer.datamodule, "batch_size", None)
        if batch_size is None:
            if trainer.train_dataloader is None:
                trainer.fit_loop.setup_data()
            batch_size = trainer.train_dataloader.batch_size
        return int(batch_size) * trainer.world_size * trainer.accumulate_grad_batches

    def configure_optimizers(self):
        """The optimizer of ``hparams.optimizer`` on :meth:`parameter_groups`, its learning rate
        scaled with the global batch when ``lr_batch_size`` is set, under :meth:`lr_schedule`."""
        settings = self.optimizer_settings
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ConfigError(
                "The learning-rate and weight-decay schedules span the whole run; set "
                "trainer.max_steps or trainer.max_epochs."
            )
        self.total_steps = max(int(total), 1)
        lr = settings.lr
        if settings.lr_batch_size is not None:
            lr = scaled_lr(lr, self.global_batch_size(), settings.lr_batch_size)
        optimizer = build_optimizer(self.parameter_groups(settings), settings, lr)
        schedule = self.lr_schedule(optimizer)
        if schedule is None:
            return {"optimizer": optimizer}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """With ``optimizer.weight_decay_end``, set this step's weight decay of the decayed
        groups (:func:`~glimpse.optim.param_groups.is_decayed`): a cosine from
        ``weight_decay`` to it over the fit (DINO, 0.04 to 0.4)."""
        settings = self.optimizer_settings
        if settings.weight_decay_end is None:
            return
        decay = cosine_schedule(
            self.global_step, self.total_steps, settings.weight_decay, settings.weight_decay_end
        )
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                if is_decayed(group):
                    group["weight_decay"] = decay
        self.log("train/weight_decay", decay)

    def check_finite(self, loss: torch.Tensor) -> None:
        """Stop training, before the optimizer step, on a NaN or infinite loss."""
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"Training loss became {loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}); training stopped and the last checkpoint was "
                "kept. Lower optimizer.lr or set trainer.gradient_clip_val."
            )

    def check_inputs(self, given: Sequence[str]) -> None:
        """ConfigError naming the inputs this task takes when it does not predict from every
        eval.py input key in ``given`` (``image``, ``text``, ``prompt``)."""
        unsupported = [key for key in given if key not in self.PREDICTS_FROM]
        if unsupported:
            takes = ", ".join(f"{key}=" for key in sorted(self.PREDICTS_FROM)) or "no inputs"
            raise ConfigError(
                f"{type(self).__name__} does not predict from "
                f"{', '.join(key + '=' for key in unsupported)}; it takes {takes}."
            )

    def predict_from(
        self, inputs: PredictionInputs, options: PredictionOptions
    ) -> list[Prediction]:
        """:meth:`predict_inputs` in eval mode without gradients, after
        :meth:`check_inputs`."""
        self.check_inputs(inputs.given)
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

    def apply_eval_options(self, options: PredictionOptions) -> None:
        """Take eval.py's options that change how this task evaluates (a captioner's beam size)
        before its test split or predictions; most tasks have none."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["glimpse"] = {
            "task": f"{type(self).__module__}.{type(self).__qualname__}",
            "config": self.run_config,
            "code_version": code_version(),
        }
