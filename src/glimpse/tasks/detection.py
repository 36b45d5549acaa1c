"""Object detection with DETR (Carion et al. 2020) as a task."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.optim.lr_scheduler import MultiStepLR

from glimpse.batches import DETECTION, DetectionBatch
from glimpse.callbacks.detection_figures import DetectionFigures
from glimpse.metrics.coco_detection import BOX_METRICS, CocoBoxMAP, detection_records
from glimpse.models.detr import DETROutput, imagenet_state
from glimpse.models.detr_loss import SetCriterion, postprocess
from glimpse.models.matcher import HungarianMatcher
from glimpse.optim.settings import OptimizerSettings
from glimpse.plotting.detection import detection_figure
from glimpse.prediction import Prediction, PredictionInputs, PredictionOptions
from glimpse.tasks.base import GlimpseTask, plain
from glimpse.tasks.checkpoints import load_network_weights, resnet_trunk_state

log = logging.getLogger(__name__)

#: Losses logged every training step; the per-layer auxiliary ones are summed into ``loss``.
LOGGED_LOSSES = ("loss", "loss_ce", "loss_bbox", "loss_giou", "cardinality_error")


class Detector(GlimpseTask):
    """Detect the spec's object classes with DETR.

    Training matches the queries' predictions to the ground-truth boxes (Hungarian matching on
    the class, L1 and GIoU costs) and minimises DETR's set loss on every decoder layer
    (:class:`~glimpse.models.detr_loss.SetCriterion`). Validation and test log the same losses
    and COCO's box mAP from pycocotools' COCOeval on the data's own annotation file
    (``val/map``, ``map_50``, ``map_75``, ``map_small``, ``map_medium``, ``map_large``), with the
    predictions mapped back to the original images' pixels and COCO's category ids.

    The optimizer is AdamW with the backbone at its own learning rate and one step drop of both
    by 10x (DETR's schedule: 1e-4 and 1e-5, dropped after two thirds of training).

    Args:
        spec: the DataSpec as a dict (class names, COCO category ids, annotation files).
        net: Hydra config of the network (``glimpse.models.detr.detr_r50`` or ``detr_small``);
            ``num_classes`` is filled in from the spec.
        matcher: HungarianMatcher costs ``cost_class``, ``cost_bbox``, ``cost_giou``.
        criterion: SetCriterion's ``eos_coef``, ``weight_ce``, ``weight_bbox``, ``weight_giou``.
        optimizer: AdamW's ``lr``, ``weight_decay`` and ``betas`` of the transformer and heads.
        backbone_lr: the backbone's learning rate.
        lr_drop: the fraction of the optimizer steps after which both learning rates drop by
            10x; None keeps them constant.
        pretrained: ``"torchvision"`` loads ImageNet weights into the backbone when fitting
            starts; a path loads the ResNet trunk of a glimpse checkpoint instead (an image
            classifier's, ``model=resnet``, of the same arch: see
            :func:`~glimpse.tasks.checkpoints.resnet_trunk_state`), which is how a CPU run
            without ImageNet weights starts from a network pretrained on its own images; None
            keeps random weights.
        init_from: a glimpse detection checkpoint whose network weights start the fit (before a
            resumed run restores its own): a class head of another size stays fresh, the
            queries and everything else are kept. This is how a DETR trained on COCO is
            fine-tuned on a small dataset of its own classes.
        score_threshold: the lowest score :meth:`detect` and the figures keep.
        figures: arguments of :class:`~glimpse.callbacks.detection_figures.DetectionFigures`;
            None for none.
    """

    ACCEPTS = frozenset({DETECTION})
    PREDICTS_FROM = frozenset({"image"})

    def __init__(
        self,
        spec: dict[str, Any],
        net: dict[str, Any],
        matcher: dict[str, float],
        criterion: dict[str, float],
        optimizer: dict[str, Any],
        backbone_lr: float = 1e-5,
        lr_drop: float | None = 2 / 3,
        pretrained: str | None = "torchvision",
        init_from: str | None = None,
        score_threshold: float = 0.5,
        figures: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "spec": plain(spec),
                "net": plain(net),
                "matcher": plain(matcher),
                "criterion": plain(criterion),
                "optimizer": plain(optimizer),
                "backbone_lr": float(backbone_lr),
                "lr_drop": None if lr_drop is None else float(lr_drop),
                "pretrained": pretrained,
                "init_from": None if init_from is None else str(init_from),
                "score_threshold": float(score_threshold),
                "figures": plain(figures),
            }
        )
        if pretrained not in (None, "torchvision") and not Path(pretrained).is_file():
            raise ValueError(
                f"model.pretrained={pretrained!r} is neither torchvision, null nor an existing "
                "checkpoint file."
            )
        if lr_drop is not None and not 0 < lr_drop <= 1:
            raise ValueError(f"model.lr_drop={lr_drop} must be in (0, 1], or null for none.")
        spec_ = self.spec
        if not spec_.class_names:
            raise ValueError("A detector needs a spec with the class names.")
        self.num_classes = len(spec_.class_names)
        self.category_ids = list(
            spec_.metadata.get("category_ids") or range(1, self.num_classes + 1)
        )
        self.net = instantiate(self.hparams["net"], num_classes=self.num_classes)
        self.criterion = SetCriterion(
            self.num_classes,
            HungarianMatcher(**self.hparams["matcher"]),
            **self.hparams["criterion"],
        )
        annotation_files = spec_.metadata.get("annotation_files") or {}
        for split in ("val", "test"):
            metric = CocoBoxMAP(annotation_files[split]) if split in annotation_files else None
            setattr(self, f"{split}_map", metric)

    # Weights -----------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        source = self.hparams["pretrained"]
        backbone = self.net.backbone
        if source == "torchvision":
            backbone.load_imagenet_state(imagenet_state(backbone.arch))
        elif source is not None:
            backbone.load_imagenet_state(resnet_trunk_state(source, backbone.arch))
            log.info("Backbone started from the %s trunk of %s", backbone.arch, source)
        if self.hparams["init_from"] is not None:
            load_network_weights(self.net, self.hparams["init_from"], "class_embed.")

    def parameter_groups(self, settings: OptimizerSettings) -> list[dict[str, Any]]:
        """The backbone's trained parameters at ``backbone_lr``, the rest at ``optimizer.lr``,
        weight decay on all (as DETR)."""
        named = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
        backbone = [p for n, p in named if n.startswith("backbone.")]
        rest = [p for n, p in named if not n.startswith("backbone.")]
        groups = [{"name": "decay", "params": rest}]
        if backbone:
            lr = self.hparams["backbone_lr"]
            groups.append({"name": "backbone.decay", "params": backbone, "lr": lr})
        return groups

    def lr_schedule(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """DETR's schedule: both learning rates drop 10x after ``lr_drop`` of the steps."""
        if self.hparams["lr_drop"] is None:
            return None
        drop = max(1, round(self.hparams["lr_drop"] * self.total_steps))
        return {
            "scheduler": MultiStepLR(optimizer, milestones=[drop], gamma=0.1),
            "interval": "step",
        }

    def configure_callbacks(self) -> list[Callback]:
        figures = self.hparams["figures"]
        present = {type(c) for c in self.trainer.callbacks}
        if figures is None or DetectionFigures in present:
            return []
        return [DetectionFigures(self.trainer.default_root_dir, **figures)]

    # Computation -------------------------------------------------------------------------

    def forward(self, images: Tensor, mask: Tensor) -> DETROutput:
        """``images (B, 3, H, W)``, ``mask (B, H, W)`` True on padding -> DETR's predictions."""
        return self.net(images, mask)

    def _log_losses(self, losses: dict[str, Tensor], split: str, batch_size: int) -> None:
        train = split == "train"
        for name in LOGGED_LOSSES:
            self.log(
                f"{split}/{name}",
                losses[name],
                on_step=train,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=batch_size,
                sync_dist=not train,
            )

    def training_step(self, batch: DetectionBatch, batch_idx: int) -> Tensor:
        losses = self.criterion(self(batch.images, batch.mask), batch.targets)
        self.check_finite(losses["loss"])
        self._log_losses(losses, "train", len(batch.targets))
        return losses["loss"]

    def _evaluate(self, batch: DetectionBatch, split: str) -> None:
        output = self(batch.images, batch.mask)
        self._log_losses(self.criterion(output, batch.targets), split, len(batch.targets))
        metric: CocoBoxMAP | None = getattr(self, f"{split}_map")
        if metric is None:
            return
        records = []
        detections = postprocess(output, batch.orig_sizes)
        for image_id, found in zip(batch.image_ids.tolist(), detections, strict=True):
            records += detection_records(
                image_id, found["boxes"], found["scores"], found["labels"], self.category_ids
            )
        metric.update(records, batch.image_ids.tolist())

    def _log_map(self, split: str) -> None:
        metric: CocoBoxMAP | None = getattr(self, f"{split}_map")
        if metric is None:
            return
        values = metric.compute()
        for name in BOX_METRICS:
            self.log(f"{split}/{name}", values[name], prog_bar=name in ("map", "map_50"))
        metric.reset()

    def validation_step(self, batch: DetectionBatch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_map("val")

    def test_step(self, batch: DetectionBatch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_map("test")

    @torch.no_grad()
    def detect(
        self, images: Tensor, mask: Tensor, orig_sizes: Tensor, threshold: float | None = None
    ) -> list[dict[str, Any]]:
        """Detections of a padded batch with a score of at least ``threshold`` (default: the
        configured ``score_threshold``), best first: per image ``boxes (n, 4)`` absolute xyxy
        of the original image ``orig_sizes (B, 2)`` ``(h, w)``, ``scores (n,)``, ``labels
        (n,)`` and the class ``names``."""
        was_training = self.training
        self.eval()
        output = self(images.to(self.device), mask.to(self.device))
        self.train(was_training)
        threshold = self.hparams["score_threshold"] if threshold is None else threshold
        names = self.spec.class_names
        results = []
        for found in postprocess(output, orig_sizes.to(self.device)):
            keep = found["scores"] >= threshold
            order = found["scores"][keep].argsort(descending=True)
            boxes, scores = found["boxes"][keep][order].cpu(), found["scores"][keep][order].cpu()
            labels = found["labels"][keep][order].cpu()
            results.append(
                {
                    "boxes": boxes,
                    "scores": scores,
                    "labels": labels,
                    "names": [names[i] for i in labels.tolist()],
                }
            )
        return results

    def predict_inputs(
        self, inputs: PredictionInputs, options: PredictionOptions
    ) -> list[Prediction]:
        """Each image's detections above ``model.score_threshold``, boxes in the file's pixels,
        and a picture of them (``detections``)."""
        predictions = []
        for image in inputs.images:
            pixels = image.pixels[None]
            mask = torch.zeros(1, *pixels.shape[2:], dtype=torch.bool)
            found = self.detect(pixels, mask, torch.tensor([image.original_size]))[0]
            listed = [
                (name, float(score), [round(v, 1) for v in box.tolist()])
                for name, score, box in zip(
                    found["names"], found["scores"], found["boxes"], strict=True
                )
            ]
            lines = [f"{image.path}: {len(listed)} detections"]
            lines += [f"  {score:6.1%}  {name}  {corners}" for name, score, corners in listed]
            figure = detection_figure(
                image.picture, found["boxes"], found["names"], found["scores"], image.path
            )
            predictions.append(Prediction(image.path, lines, {"detections": figure}, listed))
        return predictions
