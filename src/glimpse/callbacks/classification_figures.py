"""Pictures of a classifier after each validation pass: the confusion matrix and, for ViT and
DeiT, attention-rollout maps over sample validation images.

Each picture is a PNG in ``<output_dir>/figures/`` named after the global step, and an image
in every WandbLogger (``val/confusion_matrix``, ``val/attention_rollout``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib import pyplot as plt
from torch import Tensor
from torch.nn import functional as F

from glimpse.callbacks.figures import FigureCallback, wandb_loggers

#: Above this many classes the confusion matrix has no per-cell counts or tick labels.
MAX_ANNOTATED_CLASSES = 20


def confusion_matrix_figure(matrix: Tensor, class_names: Sequence[str], title: str):
    """A matplotlib figure of a confusion matrix ``(C, C)`` (rows true classes, columns
    predictions): each row coloured by its share of the true class (the recall on the
    diagonal), with the counts written in the cells when there are few classes."""
    counts = matrix.cpu().numpy()
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = len(class_names)
    side = min(max(4.0, 0.45 * size + 2.5), 16.0)
    figure, axes = plt.subplots(figsize=(side, side), layout="constrained")
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    if size <= MAX_ANNOTATED_CLASSES:
        axes.set_xticks(range(size), class_names, rotation=60, ha="right")
        axes.set_yticks(range(size), class_names)
        for row in range(size):
            for column in range(size):
                colour = "white" if shares[row, column] > 0.5 else "black"
                axes.text(
                    column,
                    row,
                    int(counts[row, column]),
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=8,
                )
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    return figure


def unnormalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised images ``(B, 3, H, W)`` -> RGB arrays ``(B, H, W, 3)`` in [0, 1]."""
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    pixels = (images.float().cpu() * std_t + mean_t).clamp(0, 1)
    return pixels.permute(0, 2, 3, 1).numpy()


def rollout_figure(pixels: np.ndarray, maps: Tensor, titles: Sequence[str], columns: int = 4):
    """Images ``(B, H, W, 3)`` with their rollout maps ``(B, h, w)`` laid over them (each map
    scaled to [0, 1] and resized bilinearly to the image), one panel per image."""
    count = len(pixels)
    rows = -(-count // columns)
    height, width = pixels.shape[1:3]
    upsampled = F.interpolate(maps[:, None].float().cpu(), size=(height, width), mode="bilinear")
    upsampled = upsampled[:, 0]
    low = upsampled.amin(dim=(1, 2), keepdim=True)
    high = upsampled.amax(dim=(1, 2), keepdim=True)
    heat = ((upsampled - low) / (high - low).clamp_min(1e-12)).numpy()
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.6 * columns, 2.8 * rows), layout="constrained", squeeze=False
    )
    for index, panel in enumerate(axes.flat):
        panel.axis("off")
        if index < count:
            panel.imshow(pixels[index])
            panel.imshow(heat[index], cmap="jet", alpha=0.45)
            panel.set_title(titles[index], fontsize=8)
    return figure


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
        if self.samples is not None or dataloader_idx != 0:
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
