"""Pictures of a detector after each validation pass: sample validation images with the
predicted boxes (solid, with class and score) and the ground-truth boxes (dashed).

Each picture is a PNG ``<output_dir>/figures/detections_step<step>.png``; every WandbLogger gets
the images with both box sets as interactive wandb boxes (``val/detections``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib import pyplot as plt
from torch import Tensor

from glimpse.callbacks.figures import FigureCallback, wandb_loggers
from glimpse.models.box_ops import cxcywh_to_xyxy
from glimpse.plotting import unnormalise
from glimpse.plotting.detection import draw_detections


class DetectionFigures(FigureCallback):
    """After each validation pass (not the sanity check), detect objects in ``num_images``
    validation images (the first of the first pass, the same ones every time) with
    ``pl_module.detect`` and draw them with their ground truth.

    Args:
        output_dir: the run directory; pictures go to its ``figures/`` folder.
        num_images: validation images drawn.
        every_n_validations: draw every n-th validation pass only.
        columns: images per row of the picture.
    """

    def __init__(
        self,
        output_dir: str,
        num_images: int = 4,
        every_n_validations: int = 1,
        columns: int = 4,
    ) -> None:
        super().__init__(output_dir, num_images, every_n_validations)
        self.columns = columns
        #: Per kept image: the unpadded normalised image ``(3, h, w)`` and its target boxes.
        self.images: list[Tensor] = []
        self.truth: list[tuple[Tensor, Tensor]] = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """During the first validation pass, keep the first ``num_images`` images."""
        if not self.collects_from(trainer, dataloader_idx):
            return
        for position in range(min(self.num_images - len(self.images), len(batch.targets))):
            height, width = batch.sizes[position].tolist()
            self.images.append(batch.images[position, :, :height, :width].detach().cpu())
            target = batch.targets[position]
            scale = torch.tensor([width, height, width, height], dtype=torch.float32)
            boxes = cxcywh_to_xyxy(target.boxes.detach().float().cpu()) * scale
            self.truth.append((boxes, target.labels.detach().cpu()))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.count_validation(trainer) or not trainer.is_global_zero or not self.images:
            return
        spec = pl_module.spec
        names = spec.class_names
        found = [self._detect(pl_module, image) for image in self.images]
        step = trainer.global_step
        rows = -(-len(self.images) // self.columns)
        columns = min(self.columns, len(self.images))
        figure, grid = plt.subplots(
            rows, columns, figsize=(3.2 * columns, 3.2 * rows), layout="constrained", squeeze=False
        )
        pixels = [unnormalise(image[None], spec.mean, spec.std)[0] for image in self.images]
        for axes, image, detections, (truth, labels) in zip(
            grid.flat, pixels, found, self.truth, strict=False
        ):
            truth_names = [names[i] for i in labels.tolist()]
            draw_detections(
                axes,
                image,
                detections["boxes"],
                detections["names"],
                detections["scores"],
                truth,
                truth_names,
            )
        for axes in list(grid.flat)[len(self.images) :]:
            axes.set_axis_off()
        figure.suptitle(f"validation at step {step}: predictions (solid), ground truth (dashed)")
        self.save(figure, f"detections_step{step:07d}.png")
        self._log_wandb(trainer, pixels, found, names, step)

    def _detect(self, pl_module: L.LightningModule, image: Tensor) -> dict[str, Any]:
        """Detections of one unpadded image, in its own pixels."""
        height, width = image.shape[1:]
        mask = torch.zeros(1, height, width, dtype=torch.bool)
        size = torch.tensor([[height, width]])
        return pl_module.detect(image[None], mask, size)[0]

    def _log_wandb(
        self,
        trainer: L.Trainer,
        pixels: Sequence[np.ndarray],
        found: Sequence[dict[str, Any]],
        names: Sequence[str],
        step: int,
    ) -> None:
        """The images with predicted and ground-truth wandb boxes, to every WandbLogger."""
        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        class_labels = dict(enumerate(names))
        boxes = []
        for image, detections, (truth, labels) in zip(pixels, found, self.truth, strict=True):
            height, width = image.shape[:2]
            boxes.append(
                {
                    "predictions": _wandb_boxes(
                        detections["boxes"],
                        detections["labels"],
                        detections["scores"],
                        width,
                        height,
                        class_labels,
                    ),
                    "ground_truth": _wandb_boxes(truth, labels, None, width, height, class_labels),
                }
            )
        images = [(image * 255).round().astype(np.uint8) for image in pixels]
        for logger in loggers:
            logger.log_image(key="val/detections", images=images, step=step, boxes=boxes)


def _wandb_boxes(
    boxes: Tensor,
    labels: Tensor,
    scores: Tensor | None,
    width: int,
    height: int,
    class_labels: dict[int, str],
) -> dict[str, Any]:
    """wandb's box format: fractions of the image, one record per box."""
    records = []
    for index, ((x0, y0, x1, y1), label) in enumerate(
        zip(boxes.tolist(), labels.tolist(), strict=True)
    ):
        record: dict[str, Any] = {
            "position": {
                "minX": x0 / width,
                "maxX": x1 / width,
                "minY": y0 / height,
                "maxY": y1 / height,
            },
            "class_id": int(label),
        }
        if scores is not None:
            score = float(scores[index])
            record["scores"] = {"score": score}
            record["box_caption"] = f"{class_labels[int(label)]} {score:.2f}"
        records.append(record)
    return {"box_data": records, "class_labels": class_labels}
