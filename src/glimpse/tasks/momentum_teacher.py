"""What BYOL and DINO share: a student trained by gradients, a teacher that is its moving average,
and the evaluation of the backbone while it trains.

The lecture's self-supervised slides: features learned from images without labels, by making
the student's output of one view of an image predict the teacher's output of another view.
BYOL's online/target networks (Grill et al. 2020) and DINO's student/teacher (Caron et al.
2021) are the same pattern:

* ``student = {backbone, head}``: the backbone is a classification network of the classifier's
  factories with its head removed (:func:`~glimpse.models.backbones.feature_backbone`), the
  head the method's projector;
* ``teacher``: a copy of the student that never receives gradients; after every optimizer step
  ``theta_t <- tau theta_t + (1 - tau) theta_s`` (BYOL eq. 1), ``tau`` rising from
  ``teacher_momentum`` to 1 on a cosine over the training steps (BYOL sec. 3.3; DINO's
  ``lambda``). The teacher has no stochastic depth (DINO builds its teacher without it).

While training, the backbone's features (``image_features``: BYOL's online backbone, DINO's
teacher backbone, as each paper evaluates) are watched two ways, both logged:

* an online linear probe, a linear layer trained by cross-entropy on the detached features of
  the first view (``train/probe_acc1``), in its own parameter group (own learning rate, no
  weight decay, no LARS adaptation), so the self-supervised loss never sees the labels; it is
  evaluated on the val split (``val/probe_acc1``);
* DINO's weighted kNN classifier (k=20, T=0.07; :func:`~glimpse.metrics.knn.knn_classify`) at
  every validation: the memory bank is the labelled train split (validation loader 0), the
  queries the val split (loader 1): ``val/knn_acc1``, ``val/knn_acc5``. ``val/feature_std`` is
  the per-dimension standard deviation of the L2-normalised val features times ``sqrt(D)``:
  about 1 for features spread over the sphere, 0 when the representation has collapsed.

The optimizer is every task's (:mod:`glimpse.optim.settings`): here LARS for BYOL, AdamW for
DINO, with the learning rate scaled linearly with the global batch, ``lr * B / lr_batch_size``
(BYOL: 0.2 per 256 images; DINO: 5e-4 per 256), linear warm-up and cosine decay per step;
biases, norms and what a network lists in ``no_weight_decay()`` are neither decayed nor
LARS-adapted. With ``weight_decay_end`` the weight decay follows a cosine from
``weight_decay`` to it over training (DINO: 0.04 to 0.4).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from glimpse.batches import MULTI_VIEW_IMAGES, LabelledImages, MultiViewImages
from glimpse.callbacks.ssl_figures import AttentionMapFigures
from glimpse.errors import ConfigError
from glimpse.metrics.knn import knn_accuracy
from glimpse.models.attention_maps import class_token_attention, has_attention_maps
from glimpse.models.backbones import feature_backbone
from glimpse.models.momentum import cosine_momentum, ema_update_
from glimpse.optim.param_groups import decay_groups
from glimpse.optim.settings import OptimizerSettings
from glimpse.plotting.attention_maps import attention_map_figure
from glimpse.prediction import Prediction, PredictionInputs, PredictionOptions
from glimpse.tasks.base import GlimpseTask, plain


def remove_stochastic_depth(module: nn.Module) -> None:
    """Set every DropPath's ``drop_prob`` and every Dropout's ``p`` in ``module`` to 0."""
    for sub in module.modules():
        if hasattr(sub, "drop_prob"):
            sub.drop_prob = 0.0
        if isinstance(sub, nn.modules.dropout._DropoutNd):
            sub.p = 0.0


class MomentumTeacherTask(GlimpseTask):
    """Base of :class:`~glimpse.tasks.byol.BYOL` and :class:`~glimpse.tasks.dino.DINO` (see the
    module docstring).

    Subclasses build the head in :meth:`build_head` and compute the loss in :meth:`ssl_step`;
    they set :attr:`FEATURES_FROM` to the network whose backbone is evaluated and exported.

    Args:
        spec: the DataSpec as a dict (class names for the probe and kNN, image size).
        backbone: a Hydra config of a classification network (as ``model.net`` of the image
            classifier), e.g. ``{"_target_": "glimpse.models.resnet.resnet", "arch":
            "resnet18"}``; its head is removed.
        optimizer: the settings of :mod:`glimpse.optim.settings`: ``name`` (adamw | lars),
            ``lr`` (per ``lr_batch_size`` images; null for no scaling), ``weight_decay``,
            ``weight_decay_end`` (null: constant), AdamW's ``betas`` and ``eps``, LARS's
            ``momentum`` and ``trust_coefficient``.
        scheduler: ``warmup_steps`` and ``min_lr_ratio`` of the warm-up + cosine schedule.
        teacher_momentum: ``tau_base``, the EMA momentum at the first step (0.996).
        probe: the online linear probe's ``lr`` and ``weight_decay``; null for no probe.
        knn: the kNN monitor's ``k`` and ``temperature``.
        image_size_arg: the backbone's constructor argument that receives the spec's image
            size (``img_size`` for the transformers); None for networks without one.
        figures: arguments of :class:`~glimpse.callbacks.ssl_figures.AttentionMapFigures`
            (ViT backbones); None for none.
        **method: the subclass's own hyperparameters, saved with these.
    """

    ACCEPTS = frozenset({MULTI_VIEW_IMAGES})
    PREDICTS_FROM = frozenset({"image"})
    #: Student and teacher compiled each on its own (the teacher is a copy made before).
    NETWORKS: ClassVar[tuple[str, ...]] = (
        "student.backbone",
        "student.head",
        "teacher.backbone",
        "teacher.head",
    )
    #: ``"student"`` or ``"teacher"``: whose backbone gives :meth:`image_features`.
    FEATURES_FROM: ClassVar[str] = "student"

    def __init__(
        self,
        spec: dict[str, Any],
        backbone: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        teacher_momentum: float = 0.996,
        probe: dict[str, Any] | None = None,
        knn: dict[str, Any] | None = None,
        image_size_arg: str | None = "img_size",
        figures: dict[str, Any] | None = None,
        **method: Any,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "spec": plain(spec),
                "backbone": plain(backbone),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler),
                "teacher_momentum": float(teacher_momentum),
                "probe": plain(probe),
                "knn": plain(knn) or {"k": 20, "temperature": 0.07},
                "image_size_arg": image_size_arg,
                "figures": plain(figures),
                **{name: plain(value) for name, value in method.items()},
            }
        )
        self._check_settings()
        class_names = self.spec.class_names
        if not class_names or len(class_names) < 2:
            raise ValueError(
                "Self-supervised training needs a spec with at least 2 class names, for the kNN "
                "monitor and the linear probe; use a data=ssl_* config."
            )
        self.num_classes = len(class_names)
        backbone_net, self.feature_dim = feature_backbone(self.build_backbone())
        self.student = nn.ModuleDict(
            {"backbone": backbone_net, "head": self.build_head(self.feature_dim)}
        )
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        remove_stochastic_depth(self.teacher)
        self.probe = nn.Linear(self.feature_dim, self.num_classes) if probe else None
        for split in ("train", "val", "test"):
            metric = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
            setattr(self, f"{split}_probe_acc1", metric)
        self._features: dict[int, list[tuple[Tensor, Tensor]]] = {}

    def _check_settings(self) -> None:
        OptimizerSettings.from_config(self.hparams["optimizer"])  # refused before any fit
        if not 0 <= self.hparams["teacher_momentum"] <= 1:
            raise ValueError(
                f"model.teacher_momentum={self.hparams['teacher_momentum']} must be in [0, 1]."
            )

    def build_backbone(self) -> nn.Module:
        """The classification network of ``hparams.backbone`` with the spec's image size."""
        kwargs: dict[str, Any] = {}
        size_arg = self.hparams["image_size_arg"]
        if size_arg and self.hparams["backbone"].get(size_arg) is None:
            kwargs[size_arg] = self.spec.image_size
        return instantiate(self.hparams["backbone"], **kwargs)

    def build_head(self, feature_dim: int) -> nn.Module:
        """The student's head on features ``(B, feature_dim)`` (copied into the teacher)."""
        raise NotImplementedError

    def ssl_step(self, views: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """``views`` of a training batch -> (the self-supervised loss, the probe's input: the
        evaluated backbone's features of the first view ``(B, D)``, detached)."""
        raise NotImplementedError

    @property
    def feature_network(self) -> nn.ModuleDict:
        """The network whose backbone is evaluated and exported (:attr:`FEATURES_FROM`)."""
        return self.teacher if self.FEATURES_FROM == "teacher" else self.student

    def image_features(self, images: Tensor) -> Tensor:
        """``images (B, 3, H, W)`` normalised as the spec says -> backbone features ``(B, D)``;
        the caller sets evaluation mode and ``torch.no_grad``."""
        return self.feature_network["backbone"](images)

    def forward(self, images: Tensor) -> Tensor:
        return self.image_features(images)

    def predict_inputs(
        self, inputs: PredictionInputs, options: PredictionOptions
    ) -> list[Prediction]:
        """For each image, the figure of the evaluated ViT backbone's last-block class-token
        attention per head (``attention_maps``); ConfigError when the backbone is no ViT."""
        vit = self.feature_network["backbone"]
        if not has_attention_maps(vit):
            raise ConfigError(
                f"The checkpoint's backbone is a {type(vit).__name__}; attention maps need a "
                "ViT backbone (model.backbone._target_=glimpse.models.vit.*)."
            )
        predictions = []
        for image in inputs.images:
            maps = class_token_attention(vit, image.pixels[None].to(self.device))
            figure = attention_map_figure(image.picture[None], maps, [Path(image.path).name])
            lines = [f"{image.path}: attention maps of {maps.shape[1]} heads"]
            predictions.append(Prediction(image.path, lines, {"attention_maps": figure}))
        return predictions

    def exported_backbone(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """(the backbone's network config with the image size filled in, its state dict): the
        weights :func:`glimpse.tasks.checkpoints.load_backbone` gives a classifier built from
        the same config (``model.pretrained=PATH``); the classifier's head stays fresh."""
        config = dict(self.hparams["backbone"])
        size_arg = self.hparams["image_size_arg"]
        if size_arg and config.get(size_arg) is None:
            config[size_arg] = self.spec.image_size
        state = {
            k: v.detach().clone() for k, v in self.feature_network["backbone"].state_dict().items()
        }
        return config, state

    def teacher_momentum(self, step: int) -> float:
        """``tau`` of the EMA update after optimizer step ``step`` (0-based)."""
        return cosine_momentum(step, self.total_steps, self.hparams["teacher_momentum"])

    def training_step(self, batch: MultiViewImages, batch_idx: int) -> Tensor:
        views, labels = batch
        loss, features = self.ssl_step(tuple(views))
        self.check_finite(loss)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/teacher_momentum", self.teacher_momentum(self.global_step))
        if self.probe is None:
            return loss
        logits = self.probe(features.detach())
        probe_loss = F.cross_entropy(logits.float(), labels)
        self.train_probe_acc1(logits.detach(), labels)
        self.log("train/probe_loss", probe_loss, on_step=True, on_epoch=True)
        self.log("train/probe_acc1", self.train_probe_acc1, on_step=False, on_epoch=True)
        return loss + probe_loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then the teacher's EMA update with this step's momentum (Lightning
        counts the step in ``global_step`` after this hook)."""
        super().optimizer_step(*args, **kwargs)
        ema_update_(self.teacher, self.student, self.teacher_momentum(self.global_step))

    def parameter_groups(self, settings: OptimizerSettings) -> list[dict[str, Any]]:
        """Groups ``decay`` (weights, decayed and LARS-adapted), ``no_decay`` (biases, norms,
        ``no_weight_decay()`` names) and ``probe`` (its own lr and weight decay, never
        LARS-adapted); the teacher, which gets no gradients, is in none."""
        groups = decay_groups(self, settings.weight_decay, exclude=("probe.",))
        if self.probe is not None:
            probe = self.hparams["probe"]
            groups.append(
                {
                    "name": "probe",
                    "params": list(self.probe.parameters()),
                    "lr": float(probe["lr"]),
                    "weight_decay": float(probe.get("weight_decay", 0.0)),
                }
            )
        return groups

    def configure_callbacks(self) -> list[Callback]:
        figures = self.hparams["figures"]
        present = {type(c) for c in self.trainer.callbacks}
        backbone = self.feature_network["backbone"]
        if figures is None or AttentionMapFigures in present or not has_attention_maps(backbone):
            return []
        return [AttentionMapFigures(self.trainer.default_root_dir, **figures)]

    def _collect(self, batch: LabelledImages, dataloader_idx: int, split: str) -> None:
        images, labels = batch
        features = self.image_features(images)
        self._features.setdefault(dataloader_idx, []).append((features.float(), labels))
        if dataloader_idx == 1 and self.probe is not None:
            getattr(self, f"{split}_probe_acc1").update(self.probe(features), labels)

    def _gathered(self, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """The features ``(N, D)`` and labels ``(N,)`` of a loader's pass, from every process."""
        parts = self._features.get(dataloader_idx, [])
        features = torch.cat([f for f, _ in parts])
        labels = torch.cat([y for _, y in parts])
        if self.trainer.world_size > 1:
            features = self.all_gather(features).flatten(0, 1)
            labels = self.all_gather(labels).flatten(0, 1)
        return features, labels

    def _log_evaluation(self, split: str) -> None:
        """Log the kNN accuracy, the feature spread and the probe's accuracy of a pass."""
        if self.probe is not None and 1 in self._features:
            metric = getattr(self, f"{split}_probe_acc1")
            self.log(f"{split}/probe_acc1", metric.compute())
            metric.reset()
        if 0 in self._features and 1 in self._features:
            bank, bank_labels = self._gathered(0)
            query, query_labels = self._gathered(1)
            knn = self.hparams["knn"]
            accuracy = knn_accuracy(
                query,
                query_labels,
                bank,
                bank_labels,
                self.num_classes,
                k=int(knn["k"]),
                temperature=float(knn["temperature"]),
            )
            for name, value in accuracy.items():
                self.log(f"{split}/knn_{name}", value, prog_bar=name == "acc1")
            spread = F.normalize(query, dim=1).std(dim=0, correction=0).mean()
            spread = spread * query.shape[1] ** 0.5
            self.log(f"{split}/feature_std", spread)
        self._features = {}

    def on_validation_epoch_start(self) -> None:
        self._features = {}

    def validation_step(self, batch: LabelledImages, batch_idx: int, dataloader_idx: int = 0):
        self._collect(batch, dataloader_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._features = {}

    def test_step(self, batch: LabelledImages, batch_idx: int, dataloader_idx: int = 0):
        self._collect(batch, dataloader_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")
