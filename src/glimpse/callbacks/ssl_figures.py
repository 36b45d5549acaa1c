"""DINO's self-attention maps (:mod:`glimpse.models.attention_maps`) of sample validation
images after validation passes: PNG in ``<output_dir>/figures/`` and ``val/attention_maps`` in
every WandbLogger. ``eval.py image=...`` draws them for image files through the task's
:meth:`~glimpse.tasks.momentum_teacher.MomentumTeacherTask.predict_inputs`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import Tensor

from glimpse.callbacks.figures import FigureCallback, wandb_loggers
from glimpse.models.attention_maps import class_token_attention
from glimpse.plotting import unnormalise
from glimpse.plotting.attention_maps import attention_map_figure


class AttentionMapFigures(FigureCallback):
    """After each validation pass (not the sanity check), draw the class token's last-block
    attention of the task's evaluated ViT backbone (``pl_module.feature_network["backbone"]``:
    DINO's teacher, BYOL's online network) over ``num_images`` val images: those of the first
    val-split batch (validation loader 1, the same images every time).

    Args:
        output_dir: the run directory; pictures go to its ``figures/`` folder.
        num_images: images drawn.
        every_n_validations: draw every n-th validation pass only.
    """

    def __init__(self, output_dir: str, num_images: int = 4, every_n_validations: int = 1) -> None:
        super().__init__(output_dir, num_images, every_n_validations)
        #: The images drawn ``(n, 3, H, W)`` and their labels ``(n,)``, kept from the first pass.
        self.samples: tuple[Tensor, Tensor] | None = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        query_loader = 1 if len(trainer.num_val_batches) > 1 else 0
        if self.collects_from(trainer, dataloader_idx, query_loader) and batch_idx == 0:
            images, labels = batch
            self.samples = (
                images[: self.num_images].detach().cpu(),
                labels[: self.num_images].detach().cpu(),
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.count_validation(trainer) or self.samples is None:
            return
        if not trainer.is_global_zero:
            return
        images, labels = self.samples
        vit = pl_module.feature_network["backbone"]
        maps = class_token_attention(vit, images.to(pl_module.device))
        spec = pl_module.spec
        names = spec.class_names or ()
        titles = [names[i] if i < len(names) else str(i) for i in labels.tolist()]
        figure = attention_map_figure(unnormalise(images, spec.mean, spec.std), maps, titles)
        step = trainer.global_step
        path = self.save(figure, f"attention_maps_step{step:07d}.png")
        for logger in wandb_loggers(trainer):
            logger.log_image(key="val/attention_maps", images=[str(path)], step=step)
