"""Image classification (ViT and the other visual transformers of lecture 9) as a task."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from glimpse.data.spec import LABELLED_IMAGES, LabelledImages
from glimpse.tasks.base import GlimpseTask, plain


def smoothed_targets(labels: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """Label smoothing (Szegedy et al. 2016, sec. 7): labels ``(B,)`` -> target distributions
    ``(B, C)`` putting ``1 - smoothing + smoothing / C`` on the label and ``smoothing / C`` on
    every other class."""
    targets = F.one_hot(labels, num_classes).float()
    return targets * (1.0 - smoothing) + smoothing / num_classes


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against target distributions, ``-sum_c t_c log softmax(z)_c``, averaged
    over the batch: logits and targets ``(B, C)`` -> a scalar (computed in float32)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


class ImageClassifier(GlimpseTask):
    """Classify images into the spec's classes with a network from config.

    The loss is cross-entropy against label-smoothed targets. Logs ``train/loss`` and
    ``train/acc1``, and per val and test pass ``loss``, ``acc1`` and ``acc5``: the fraction of
    images whose label is the top prediction, or among the top ``min(5, C)`` predictions
    (torchmetrics, micro-averaged over the pass, so every image counts once).

    The optimizer is AdamW with warm-up and cosine decay (:class:`GlimpseTask`); biases,
    norms and what a network lists in its ``no_weight_decay()`` (ViT's position table and
    class token) are not decayed.

    Args:
        spec: the DataSpec as a dict (holds the class names and the image size).
        net: a Hydra config of the network, e.g. ``{"_target_": "glimpse.models.vit.
            vit_tiny_patch16"}``; ``num_classes`` is filled in from the spec, and so is the
            argument named ``image_size_arg`` unless the config sets it.
        optimizer: AdamW arguments (lr, weight_decay, betas).
        scheduler: warmup_steps and min_lr_ratio of the cosine schedule.
        label_smoothing: the smoothing of the training and evaluation targets.
        image_size_arg: the network's constructor argument that receives the spec's image
            size (``img_size`` for the transformers); None for networks without one.
    """

    ACCEPTS = frozenset({LABELLED_IMAGES})

    def __init__(
        self,
        spec: dict[str, Any],
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        label_smoothing: float = 0.1,
        image_size_arg: str | None = "img_size",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "spec": plain(spec),
                "net": plain(net),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler),
                "label_smoothing": float(label_smoothing),
                "image_size_arg": image_size_arg,
            }
        )
        class_names = self.spec.class_names
        if not class_names or len(class_names) < 2:
            raise ValueError("An image classifier needs a spec with at least 2 class names.")
        self.num_classes = len(class_names)
        self.label_smoothing = float(label_smoothing)
        net_kwargs: dict[str, Any] = {"num_classes": self.num_classes}
        if image_size_arg and self.hparams["net"].get(image_size_arg) is None:
            net_kwargs[image_size_arg] = self.spec.image_size
        self.net = instantiate(self.hparams["net"], **net_kwargs)
        top_k = min(5, self.num_classes)
        for split in ("train", "val", "test"):
            metrics = {"acc1": MulticlassAccuracy(self.num_classes, top_k=1, average="micro")}
            if split != "train":
                metrics["acc5"] = MulticlassAccuracy(self.num_classes, top_k=top_k, average="micro")
            setattr(self, f"{split}_metrics", MetricCollection(metrics, prefix=f"{split}/"))

    def forward(self, images: Tensor) -> Tensor:
        """``images (B, 3, H, W) -> logits (B, C)``."""
        return self.net(images)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Label-smoothed cross-entropy of logits ``(B, C)`` against labels ``(B,)``."""
        targets = smoothed_targets(labels, self.num_classes, self.label_smoothing)
        return soft_cross_entropy(logits, targets)

    def _step(self, batch: LabelledImages, split: str) -> Tensor:
        images, labels = batch
        logits = self.net(images)
        loss = self.loss(logits, labels)
        if split == "train":
            self.check_finite(loss)
        metrics: MetricCollection = getattr(self, f"{split}_metrics")
        metrics.update(logits.detach(), labels)
        on_step = split == "train"
        size = labels.shape[0]
        self.log(
            f"{split}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=size,
            sync_dist=not on_step,
        )
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=split != "train")
        return loss

    def training_step(self, batch: LabelledImages, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: LabelledImages, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: LabelledImages, batch_idx: int) -> None:
        self._step(batch, "test")
