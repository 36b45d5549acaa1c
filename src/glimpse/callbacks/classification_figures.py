"""Pictures of a classifier after each validation pass: the confusion matrix and, for ViT and
DeiT, attention-rollout maps over sample validation images.

Each picture is a PNG in ``<output_dir>/figures/`` named after the global step, and an image
in every WandbLogger (``val/confusion_matrix``, ``val/attention_rollout``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from glimpse.callbacks.figures import FigureCallback, wandb_loggers
from glimpse.plotting import unnormalise
from glimpse.plotting.classification import confusion_matrix_figure, rollout_figure


class ClassificationFigures(FigureCallback):
    """After each validation pass (not the sanity check), draw the pass's confusion matrix
    (the task's ``val_confusion`` metric, summed over ranks) and, when the network has
    ``class_token_rollout`` (ViT, DeiT), attention rollout over ``num_images`` validation
    images (one per class first), titled with the true and predicted classes.

    Args:
        output_dir: the run directory; pictures go to its ``figures/`` folder.
        num_images: images in the rollout picture.
        every_n_validations: draw every n-th validation pass only.
    """

    def __init__(self, output_dir: str, num_images: int = 8, every_n_validations: int = 1) -> None:
        super().__init__(output_dir, num_images, every_n_validations)
        #: The rollout images ``(n, 3, H, W)`` and labels ``(n,)``, fixed after the first pass.
        self.samples: tuple[Tensor, Tensor] | None = None
        #: First image of each class seen: label -> (batch index, position, image).
        self._picked: dict[int, tuple[int, int, Tensor]] = {}
        self._first_batch: tuple[Tensor, list[int]] | None = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """During the first validation pass, pick the images drawn under rollout: one per class
        in order of appearance (validation sets are often sorted by class), then the first
        batch's others, up to ``num_images``; the same images every time after."""
        if not self.collects_from(trainer, dataloader_idx):
            return
        images, labels = batch
        for position, label in enumerate(labels.tolist()):
            if len(self._picked) < self.num_images and label not in self._picked:
                self._picked[label] = (batch_idx, position, images[position].detach().cpu())
        if batch_idx == 0:
            self._first_batch = images[: self.num_images].detach().cpu(), labels.tolist()

    def _freeze_samples(self) -> None:
        """Fix :attr:`samples` at the end of the first validation pass."""
        if self.samples is not None or self._first_batch is None:
            return
        chosen = [(label, image) for label, (_, _, image) in self._picked.items()]
        taken = {(batch, position) for batch, position, _ in self._picked.values()}
        first_images, first_labels = self._first_batch
        for position, image in enumerate(first_images):
            if len(chosen) < self.num_images and (0, position) not in taken:
                chosen.append((first_labels[position], image))
        labels, images = zip(*chosen, strict=True)
        self.samples = (torch.stack(images), torch.tensor(labels))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._freeze_samples()
        if not self.count_validation(trainer):
            return
        matrix = pl_module.val_confusion.compute()  # every rank takes part in the sum
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        names = pl_module.spec.class_names
        accuracy = matrix.diag().sum() / matrix.sum().clamp_min(1)
        figure = confusion_matrix_figure(
            matrix, names, f"validation at step {step}: top-1 {accuracy:.1%}"
        )
        self._publish(trainer, figure, "confusion_matrix", step)
        net = getattr(pl_module, "net", None)
        if self.samples is not None and hasattr(net, "class_token_rollout"):
            self._publish(trainer, self._rollout(pl_module, names), "attention_rollout", step)

    @torch.no_grad()
    def _rollout(self, pl_module: L.LightningModule, names: Sequence[str]):
        images, labels = self.samples
        images = images.to(pl_module.device)
        maps = pl_module.net.class_token_rollout(images)
        predictions = pl_module(images).argmax(dim=-1).tolist()
        titles = [
            f"true {names[t]}\npredicted {names[p]}"
            for t, p in zip(labels.tolist(), predictions, strict=True)
        ]
        spec = pl_module.spec
        return rollout_figure(unnormalise(images, spec.mean, spec.std), maps, titles)

    def _publish(self, trainer: L.Trainer, figure, name: str, step: int) -> None:
        path = self.save(figure, f"{name}_step{step:07d}.png")
        for logger in wandb_loggers(trainer):
            logger.log_image(key=f"val/{name}", images=[str(path)], step=step)
