"""Image classification (ViT and the other visual transformers of lecture 9) as a task."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from torchvision.transforms import v2

from glimpse.batches import LABELLED_IMAGES, LabelledImages
from glimpse.callbacks.classification_figures import ClassificationFigures
from glimpse.models.pretrained import check_pretrained_source
from glimpse.prediction import (
    Prediction,
    PredictionInputs,
    PredictionOptions,
    ranked_classes,
    stacked_pixels,
)
from glimpse.tasks.base import GlimpseTask, plain
from glimpse.tasks.checkpoints import load_pretrained


def smoothed_targets(targets: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """Label smoothing (Szegedy et al. 2016, sec. 7): labels ``(B,)`` or target distributions
    ``(B, C)`` (MixUp's) -> ``(1 - smoothing) * t + smoothing / C``, so a hard label gets
    ``1 - smoothing + smoothing / C`` and every other class ``smoothing / C``."""
    if targets.ndim == 1:
        targets = F.one_hot(targets, num_classes)
    return targets.float() * (1.0 - smoothing) + smoothing / num_classes


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against target distributions, ``-sum_c t_c log softmax(z)_c``, averaged
    over the batch: logits and targets ``(B, C)`` -> a scalar (computed in float32)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def batch_mixing(
    num_classes: int, mixup_alpha: float, cutmix_alpha: float, cutmix_prob: float
) -> v2.Transform | None:
    """torchvision's MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a batch.

    ``(images (B, 3, H, W), labels (B,)) -> (mixed images, targets (B, C))``: each batch is
    mixed by CutMix with probability ``cutmix_prob`` and by MixUp otherwise (only one of
    them when the other's alpha is 0); None when both alphas are 0.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= cutmix_prob <= 1:
        raise ValueError(
            f"model.mixup_alpha={mixup_alpha} and model.cutmix_alpha={cutmix_alpha} must be "
            f">= 0 and model.cutmix_prob={cutmix_prob} in [0, 1]."
        )
    mixup = v2.MixUp(alpha=mixup_alpha, num_classes=num_classes) if mixup_alpha > 0 else None
    cutmix = v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes) if cutmix_alpha > 0 else None
    if mixup and cutmix:
        return v2.RandomChoice([mixup, cutmix], p=[1 - cutmix_prob, cutmix_prob])
    return mixup or cutmix


class ImageClassifier(GlimpseTask):
    """Classify images into the spec's classes with a network from config.

    The loss is cross-entropy against label-smoothed targets; in training a batch may first
    be mixed (MixUp/CutMix, on the device after any GPU decoding, so the targets are
    distributions). Logs ``train/loss`` and ``train/acc1`` (against the dominant label of a
    mixed target), and per val and test pass ``loss``, ``acc1`` and ``acc5``: the fraction of
    images whose label is the top prediction, or among the top ``min(5, C)`` predictions
    (torchmetrics, micro-averaged over the pass, so every image counts once).

    The optimizer is AdamW with warm-up and cosine decay (:class:`GlimpseTask`); biases,
    norms and what a network lists in its ``no_weight_decay()`` (position tables, tokens,
    Swin's relative position bias tables) are not decayed.

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
        mixup_alpha, cutmix_alpha, cutmix_prob: batch mixing (see :func:`batch_mixing`);
            both alphas 0 turn it off.
        ema_decay: when set, an exponential moving average of the weights (Polyak averaging,
            Lightning's EMAWeightAveraging) is kept, validated, tested and checkpointed.
        channels_last: run the network on NHWC tensors (faster convolutions with tensor
            cores; for CNNs on GPUs).
        figures: arguments of :class:`~glimpse.callbacks.classification_figures.
            ClassificationFigures` (confusion matrix and attention rollout); None for none.
        pretrained: ``"torchvision"`` starts training from torchvision's ImageNet weights, a
            BYOL or DINO checkpoint path (``.ckpt``) from its self-supervised backbone
            (:mod:`glimpse.tasks.checkpoints`; a head of another size stays fresh). They are
            loaded when fitting starts, before a resumed run restores its checkpoint, and
            never when a checkpoint is rebuilt for evaluation.
    """

    ACCEPTS = frozenset({LABELLED_IMAGES})
    PREDICTS_FROM = frozenset({"image"})

    def __init__(
        self,
        spec: dict[str, Any],
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        label_smoothing: float = 0.1,
        image_size_arg: str | None = "img_size",
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        cutmix_prob: float = 0.5,
        ema_decay: float | None = None,
        channels_last: bool = False,
        figures: dict[str, Any] | None = None,
        pretrained: str | None = None,
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
                "mixup_alpha": float(mixup_alpha),
                "cutmix_alpha": float(cutmix_alpha),
                "cutmix_prob": float(cutmix_prob),
                "ema_decay": None if ema_decay is None else float(ema_decay),
                "channels_last": bool(channels_last),
                "figures": plain(figures),
                "pretrained": pretrained,
            }
        )
        class_names = self.spec.class_names
        if not class_names or len(class_names) < 2:
            raise ValueError("An image classifier needs a spec with at least 2 class names.")
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise ValueError(f"model.ema_decay={ema_decay} must be in (0, 1), or null for none.")
        self.num_classes = len(class_names)
        self.label_smoothing = float(label_smoothing)
        self.mixing = batch_mixing(self.num_classes, mixup_alpha, cutmix_alpha, cutmix_prob)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if pretrained is not None:
            check_pretrained_source(self.hparams["net"], pretrained)
        self.net = self.build_net()
        self.net.to(memory_format=self.memory_format)
        top_k = min(5, self.num_classes)
        for split in ("train", "val", "test"):
            metrics = {"acc1": MulticlassAccuracy(self.num_classes, top_k=1, average="micro")}
            if split != "train":
                metrics["acc5"] = MulticlassAccuracy(self.num_classes, top_k=top_k, average="micro")
            setattr(self, f"{split}_metrics", MetricCollection(metrics, prefix=f"{split}/"))
        #: Rows are true classes, columns predictions; read (and drawn) after each val pass.
        self.val_confusion = MulticlassConfusionMatrix(self.num_classes)

    def build_net(self, **overrides: Any) -> torch.nn.Module:
        """The network of ``hparams.net`` with the spec's class count and image size."""
        net_kwargs: dict[str, Any] = {"num_classes": self.num_classes, **overrides}
        size_arg = self.hparams["image_size_arg"]
        if size_arg and self.hparams["net"].get(size_arg) is None:
            net_kwargs[size_arg] = self.spec.image_size
        return instantiate(self.hparams["net"], **net_kwargs)

    def setup(self, stage: str) -> None:
        source = self.hparams["pretrained"]
        if stage == "fit" and source is not None:
            load_pretrained(self.net, self.hparams["net"], source)

    def configure_callbacks(self) -> list[Callback]:
        callbacks: list[Callback] = []
        present = {type(c) for c in self.trainer.callbacks}
        ema_decay = self.hparams["ema_decay"]
        if ema_decay is not None and EMAWeightAveraging not in present:
            callbacks.append(EMAWeightAveraging(decay=ema_decay))
        figures = self.hparams["figures"]
        if figures is not None and ClassificationFigures not in present:
            callbacks.append(ClassificationFigures(self.trainer.default_root_dir, **figures))
        return callbacks

    def forward(self, images: Tensor) -> Tensor:
        """``images (B, 3, H, W) -> logits (B, C)``."""
        return self.net(images.contiguous(memory_format=self.memory_format))

    @torch.no_grad()
    def classify(self, images: Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``min(k, C)`` most probable classes of each image ``(B, 3, H, W)`` (normalised as
        the spec says), with their softmax probabilities, most probable first."""
        was_training = self.training
        self.eval()
        probabilities = self(images.to(self.device)).float().softmax(dim=-1)
        self.train(was_training)
        top = probabilities.topk(min(k, self.num_classes), dim=-1)
        names = self.spec.class_names
        return [
            [(names[i], p) for p, i in zip(row_p.tolist(), row_i.tolist(), strict=True)]
            for row_p, row_i in zip(top.values, top.indices, strict=True)
        ]

    def predict_inputs(
        self, inputs: PredictionInputs, options: PredictionOptions
    ) -> list[Prediction]:
        """The ``num_classes_shown`` most probable classes of each image."""
        rankings = self.classify(stacked_pixels(inputs.images), options.get("num_classes_shown", 5))
        return ranked_classes(inputs.images, rankings)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Label-smoothed cross-entropy of logits ``(B, C)`` against labels ``(B,)`` or
        target distributions ``(B, C)``."""
        return soft_cross_entropy(
            logits, smoothed_targets(targets, self.num_classes, self.label_smoothing)
        )

    def training_loss(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """``(images (B, 3, H, W), labels (B,) or targets (B, C)) -> (loss, logits (B, C))``
        of a training batch, after mixing; tasks with other objectives override it."""
        logits = self(images)
        return self.loss(logits, targets), logits

    def training_step(self, batch: LabelledImages, batch_idx: int) -> Tensor:
        images, labels = batch
        targets: Tensor = labels
        if self.mixing is not None:
            images, targets = self.mixing(images, labels)
        loss, logits = self.training_loss(images, targets)
        self.check_finite(loss)
        dominant = targets.argmax(dim=-1) if targets.ndim == 2 else targets
        self.train_metrics.update(logits.detach(), dominant)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: LabelledImages, split: str) -> Tensor:
        """Loss and metrics of an evaluation batch; returns the logits ``(B, C)``."""
        images, labels = batch
        logits = self(images)
        metrics: MetricCollection = getattr(self, f"{split}_metrics")
        metrics.update(logits, labels)
        self.log(
            f"{split}/loss",
            self.loss(logits, labels),
            on_epoch=True,
            prog_bar=True,
            batch_size=labels.shape[0],
            sync_dist=True,
        )
        self.log_dict(metrics, on_epoch=True, prog_bar=True)
        return logits

    def on_validation_epoch_start(self) -> None:
        self.val_confusion.reset()

    def validation_step(self, batch: LabelledImages, batch_idx: int) -> None:
        logits = self._evaluate(batch, "val")
        self.val_confusion.update(logits, batch.labels)

    def test_step(self, batch: LabelledImages, batch_idx: int) -> None:
        self._evaluate(batch, "test")
