"""Knowledge distillation from a frozen teacher into an image classifier: DeiT's training
(Touvron et al. 2021, "Training data-efficient image transformers & distillation through
attention", sec. 4).

Notation of the paper: ``Z_s`` the student's logits, ``Z_t`` the teacher's, ``psi`` the
softmax, ``y`` the true label (here label-smoothed, and mixed by MixUp/CutMix when enabled),
``y_t = argmax_c Z_t(c)`` the teacher's hard decision, ``tau`` a temperature and ``lambda``
(``alpha`` here) the weight of the teacher's term:

    soft:  L = (1 - lambda) CE(psi(Z_s), y) + lambda tau^2 KL(psi(Z_t / tau), psi(Z_s / tau))
    hard:  L = 1/2 CE(psi(Z_s), y) + 1/2 CE(psi(Z_s), y_t)                          (sec. 4)

With a distillation token (:class:`~glimpse.models.deit.DistilledVisionTransformer`) the
student has two heads: the class head's logits take the first term and the distillation
head's the second ("Distillation token", sec. 4). A student with one head (a plain ViT, or
any classifier) takes both terms on its one output, the paper's "usual distillation". The
teacher's pseudo-labels ``y_t`` are not smoothed (sec. 4, "Label smoothing"), and the teacher
sees the same (augmented, mixed) images as the student.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from glimpse.batches import LabelledImages
from glimpse.data.images.imagenet_classes import IMAGENET1K_CLASSES, imagenet1k_indices
from glimpse.data.spec import DataSpec
from glimpse.errors import ConfigError
from glimpse.hub import torchvision_weights_state
from glimpse.tasks.base import plain
from glimpse.tasks.checkpoints import load_task
from glimpse.tasks.classification import ImageClassifier, smoothed_targets, soft_cross_entropy

log = logging.getLogger(__name__)

DISTILLATION_MODES = ("hard", "soft", "none")
TEACHER_KINDS = ("torchvision", "checkpoint")
TEACHER_KEYS = frozenset({"kind", "name", "weights", "path", "class_indices"})


def distillation_terms(
    class_logits: Tensor,
    dist_logits: Tensor,
    targets: Tensor,
    teacher_logits: Tensor | None,
    mode: str,
    tau: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """The two terms of DeiT's objectives (module docstring), each averaged over the batch and
    computed in float32: ``(CE(psi(Z_s^class), y), the teacher's term on Z_s^distil)``.

    Args:
        class_logits: ``Z_s`` of the class head ``(B, C)``, trained on ``targets``.
        dist_logits: ``Z_s`` of the distillation head ``(B, C)`` (the same tensor as
            ``class_logits`` for a one-head student), trained on the teacher.
        targets: the true-label distributions ``(B, C)``, already smoothed and mixed.
        teacher_logits: ``Z_t (B, C)``; unused (may be None) when ``mode`` is ``"none"``.
        mode: ``"hard"`` (``CE(psi(Z_s), y_t)``, ``y_t = argmax Z_t`` not smoothed), ``"soft"``
            (``tau^2 KL(psi(Z_t / tau), psi(Z_s / tau))``), or ``"none"`` (the distillation head
            learns the true targets too: ``CE(psi(Z_s^distil), y)``).
        tau: the soft term's temperature.
    """
    class_term = soft_cross_entropy(class_logits, targets)
    if mode == "none":
        return class_term, soft_cross_entropy(dist_logits, targets)
    if mode not in DISTILLATION_MODES:
        raise ValueError(f"model.distillation={mode!r} must be one of {DISTILLATION_MODES}.")
    if teacher_logits is None:
        raise ValueError(f"Distillation {mode!r} needs the teacher's logits.")
    if mode == "hard":
        return class_term, F.cross_entropy(dist_logits.float(), teacher_logits.argmax(dim=-1))
    student = F.log_softmax(dist_logits.float() / tau, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / tau, dim=-1)
    kl = F.kl_div(student, teacher, reduction="batchmean", log_target=True)
    return class_term, kl * tau**2


def distillation_loss(class_term: Tensor, dist_term: Tensor, alpha: float) -> Tensor:
    """``(1 - alpha) * class_term + alpha * dist_term``: ``alpha = 1/2`` is the paper's hard
    distillation, ``alpha = lambda = 0.1`` (with ``tau = 3``) its soft distillation."""
    return (1 - alpha) * class_term + alpha * dist_term


class FrozenTeacher(nn.Module):
    """A trained classifier whose logits, restricted to our classes, are distillation targets.

    ``images (B, 3, H, W)`` normalised with the data's statistics ``-> logits (B, C)``, under
    ``torch.no_grad``. Before the teacher sees them the images are renormalised to the
    statistics it was trained with, ``x_t = (x * std + mean - mean_t) / std_t`` per channel
    (identity when they agree). With ``class_indices`` the logits are the teacher's columns
    ``class_indices[c]`` for our class ``c`` (an ImageNet teacher on an ImageNet subset such as
    Imagenette). The teacher never trains: no gradients, evaluation mode whatever ``train()``
    is asked, and ``deepcopy`` shares it (an EMA copy of the student does not duplicate it).
    """

    def __init__(
        self,
        model: nn.Module,
        class_indices: list[int] | None = None,
        data_stats: tuple[list[float], list[float]] | None = None,
        teacher_stats: tuple[list[float], list[float]] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        indices = None if class_indices is None else torch.tensor(class_indices)
        self.register_buffer("class_indices", indices, persistent=False)
        scale = shift = None
        if data_stats and teacher_stats and data_stats != teacher_stats:
            (mean, std), (mean_t, std_t) = (
                [torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in pair]
                for pair in (data_stats, teacher_stats)
            )
            scale, shift = std / std_t, (mean - mean_t) / std_t
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenTeacher:
        return super().train(False)

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenTeacher:
        return self

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if self.scale is not None:
            images = images * self.scale + self.shift
        logits = self.model(images)
        if self.class_indices is not None:
            logits = logits[:, self.class_indices]
        return logits


def _suggested_indices(class_names: Sequence[str], categories: Sequence[str]) -> str:
    """``" (by name: [i, j, ...])"`` when each class name is exactly one of the teacher's
    category names (Imagenette's classes among ImageNet's), else ``""``."""
    indices = []
    for name in class_names:
        matches = [i for i, category in enumerate(categories) if category == name]
        if len(matches) != 1:
            return ""
        indices.append(matches[0])
    return f" (by name: [{','.join(map(str, indices))}])"


def _torchvision_teacher(
    config: dict[str, Any], spec: DataSpec, num_classes: int
) -> tuple[nn.Module, tuple[list[float], list[float]] | None, int, list[int] | None]:
    """(model, its normalisation or None for the data's, its number of outputs, the output of
    each of the data's classes or None when they are the outputs)."""
    from torchvision.models import get_model, get_model_weights

    name, weights = config.get("name"), config.get("weights")
    if not name:
        raise ValueError("model.teacher.name must name a torchvision model, e.g. resnet50.")
    class_indices = config.get("class_indices")
    if weights is None:
        # Random weights (tests, smoke runs): our classes unless a mapping is asked for.
        outputs = 1000 if class_indices is not None else num_classes
        return get_model(name, weights=None, num_classes=outputs), None, outputs, class_indices
    available = get_model_weights(name)
    try:
        weights_enum = available.verify(weights)
    except KeyError:
        raise ValueError(
            f"model.teacher.weights={weights!r} is not a weight of torchvision's {name}; use "
            f"DEFAULT, one of {[w.name for w in available]}, or null for random weights."
        ) from None
    outputs = len(weights_enum.meta["categories"])
    if class_indices is None and outputs != num_classes:
        class_indices = _imagenet_indices(spec, outputs)
        if class_indices is None:
            raise ConfigError(
                f"The teacher {name} with weights {weights} predicts {outputs} classes but the "
                f"data has {num_classes} whose folders are not ImageNet wnids; set "
                "model.teacher.class_indices to the teacher's index of each of the data's "
                "classes, in class order"
                + _suggested_indices(spec.class_names or (), weights_enum.meta["categories"])
                + ", or use a glimpse checkpoint trained on this data as the teacher "
                "(model.teacher.kind=checkpoint model.teacher.path=...), or train without one "
                "(model.distillation=none)."
            )
        log.info("Teacher: the data's ImageNet wnids are its outputs %s.", class_indices)
    transform = weights_enum.transforms()
    stats = (list(transform.mean), list(transform.std))
    log.info("Teacher: torchvision %s with weights %s.", name, weights_enum)
    model = get_model(name, weights=None, num_classes=outputs)
    without = "model.teacher.weights=null (a random teacher) or model.distillation=none"
    model.load_state_dict(torchvision_weights_state(weights_enum, without=without))
    return model, stats, outputs, class_indices


def _imagenet_indices(spec: DataSpec, outputs: int) -> list[int] | None:
    """ImageNet-1k's index of each of the data's classes when the teacher predicts
    ImageNet-1k's classes and the data's class folders are its wnids (Imagenette, Imagewoof,
    ImageNet-100, a wnid-named ImageFolder); else None."""
    if outputs != IMAGENET1K_CLASSES:
        return None
    return imagenet1k_indices(spec.metadata.get("class_folders") or spec.class_names or ())


def _checkpoint_teacher(
    config: dict[str, Any], spec: DataSpec
) -> tuple[nn.Module, tuple[list[float], list[float]] | None, int]:
    """(the checkpoint's task, its normalisation, its number of classes)."""
    path = config.get("path")
    if not path:
        raise ValueError("model.teacher.path must name a glimpse checkpoint (.ckpt) file.")
    task, meta = load_task(path, option="model.teacher.path")
    teacher_spec = task.spec
    names = teacher_spec.class_names or ()
    if config.get("class_indices") is None and tuple(names) != tuple(spec.class_names or ()):
        raise ValueError(
            f"The teacher checkpoint {path} was trained on {len(names)} classes "
            f"{list(names)[:5]}... that differ from the data's {len(spec.class_names or ())} "
            f"classes {list(spec.class_names or ())[:5]}...; give model.teacher.class_indices "
            f"or a teacher trained on the same classes."
        )
    stats = None
    if teacher_spec.mean is not None and teacher_spec.std is not None:
        stats = (list(teacher_spec.mean), list(teacher_spec.std))
    log.info("Teacher: %s from %s.", meta["task"], path)
    return task, stats, len(names)


def build_teacher(config: dict[str, Any], spec: DataSpec) -> FrozenTeacher:
    """The frozen teacher of ``model.teacher``, predicting the spec's classes.

    ``{kind: torchvision, name, weights}``: any torchvision classification model
    (``torchvision.models.get_model``); ``weights`` a weights name (``DEFAULT``,
    ``IMAGENET1K_V2``, downloaded by torchvision) or None for random weights with the spec's
    class count. ``{kind: checkpoint, path}``: a glimpse classifier checkpoint
    (:func:`glimpse.tasks.checkpoints.load_task`), whose class names must equal the spec's.
    Either may give ``class_indices``: the teacher's output index of each of the spec's classes.
    """
    num_classes = len(spec.class_names or ())
    if config["kind"] == "torchvision":
        model, stats, outputs, class_indices = _torchvision_teacher(config, spec, num_classes)
    else:
        model, stats, outputs = _checkpoint_teacher(config, spec)
        class_indices = config.get("class_indices")
    if class_indices is not None and not all(0 <= i < outputs for i in class_indices):
        raise ValueError(
            f"model.teacher.class_indices must be indices of the teacher's {outputs} outputs, "
            f"got {class_indices}."
        )
    data_stats = None if spec.mean is None else (list(spec.mean), list(spec.std or ()))
    return FrozenTeacher(model, class_indices, data_stats, stats or data_stats)


def _check_teacher_config(teacher: dict[str, Any] | None, mode: str, num_classes: int) -> None:
    if mode == "none":
        return
    if not teacher:
        raise ValueError(
            f"model.distillation={mode} needs model.teacher ({{kind: torchvision, name: ..., "
            f"weights: ...}} or {{kind: checkpoint, path: ...}}), or model.distillation=none."
        )
    unknown = set(teacher) - TEACHER_KEYS
    if unknown:
        raise ValueError(
            f"model.teacher has unknown keys {sorted(unknown)}; known: {sorted(TEACHER_KEYS)}."
        )
    if teacher.get("kind") not in TEACHER_KINDS:
        raise ValueError(
            f"model.teacher.kind={teacher.get('kind')!r} must be one of {TEACHER_KINDS}."
        )
    indices = teacher.get("class_indices")
    if indices is not None and len(indices) != num_classes:
        raise ValueError(
            f"model.teacher.class_indices has {len(indices)} entries but the data has "
            f"{num_classes} classes; give one teacher index per class, in class order."
        )


class DistillationClassifier(ImageClassifier):
    """An :class:`~glimpse.tasks.classification.ImageClassifier` trained by distillation from a
    frozen teacher (DeiT, sec. 4; the objectives are in the module docstring).

    Evaluation is the classifier's: a DeiT student in evaluation mode returns the mean of its
    two heads (the paper's joint classifier), so val/test ``acc1``/``acc5`` and the loss are
    those of the averaged logits. ``train/acc1`` is that of the averaged logits too; the two
    terms are logged as ``train/loss_cls`` and ``train/loss_dist``. The teacher's top-1
    accuracy on the validation set is logged once, in the first validation of a fit, as
    ``val/teacher_acc1``.

    The teacher is not part of the task's state. It is built from ``teacher`` when fitting
    starts (``setup("fit")``), or on first use, and kept outside the registered submodules: it
    is not in ``state_dict()`` (so not in checkpoints), not among the optimizer's parameters,
    not moved by ``.to()`` (it follows the images' device and dtype at each call), and
    ``.train()`` does not reach it. A checkpoint therefore holds the student alone, and
    :func:`glimpse.tasks.checkpoints.load_task` rebuilds the task without the teacher's weights
    or file; only resuming training needs the teacher again. The teacher reads the same images
    as the student, renormalised to its own training statistics (a torchvision weight's mean
    and std, or a glimpse checkpoint's spec); with random torchvision weights the data's are
    assumed.

    Args:
        spec, net, optimizer, scheduler, **classifier_kwargs: as for ``ImageClassifier``.
        teacher: ``{kind: torchvision, name, weights, class_indices}`` or ``{kind:
            checkpoint, path, class_indices}`` (see :func:`build_teacher`); None with
            ``distillation: none``.
        distillation: ``"hard"`` (the paper's best), ``"soft"`` or ``"none"``.
        alpha: the teacher term's weight (``1/2`` for the paper's hard distillation).
        tau: the soft distillation's temperature.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        teacher: dict[str, Any] | None = None,
        distillation: str = "hard",
        alpha: float = 0.5,
        tau: float = 1.0,
        **classifier_kwargs: Any,
    ) -> None:
        super().__init__(spec, net, optimizer, scheduler, **classifier_kwargs)
        teacher = plain(teacher)
        self.save_hyperparameters(
            {
                "teacher": teacher,
                "distillation": distillation,
                "alpha": float(alpha),
                "tau": float(tau),
            }
        )
        if distillation not in DISTILLATION_MODES:
            raise ValueError(
                f"model.distillation={distillation!r} must be one of {DISTILLATION_MODES}."
            )
        if not 0 <= alpha <= 1 or tau <= 0:
            raise ValueError(f"model.alpha={alpha} must be in [0, 1] and model.tau={tau} > 0.")
        _check_teacher_config(teacher, distillation, self.num_classes)
        self.distillation = distillation
        self.alpha = float(alpha)
        self.tau = float(tau)
        self.val_teacher_acc1 = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        self._teacher_evaluated = False
        self._teacher_updated = False
        self._set_teacher(None)

    def _set_teacher(self, teacher: FrozenTeacher | None) -> None:
        # Through __dict__, so nn.Module does not register it (see the class docstring).
        self.__dict__["_teacher"] = teacher

    @property
    def teacher(self) -> FrozenTeacher | None:
        """The frozen teacher, built on first use; None with ``distillation: none``."""
        if self._teacher is None and self.distillation != "none":
            teacher = build_teacher(self.hparams["teacher"], self.spec)
            teacher.to(memory_format=self.memory_format)
            self._set_teacher(teacher)
        return self._teacher

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == TrainerFn.FITTING:
            _ = self.teacher  # a wrong teacher fails before the first step

    def teacher_logits(self, images: Tensor) -> Tensor:
        """The teacher's logits ``(B, C)`` on ``images (B, 3, H, W)``; the teacher is moved to
        the images' device and floating dtype first."""
        teacher = self.teacher
        if teacher is None:
            raise ValueError("model.distillation=none has no teacher.")
        reference = next(teacher.model.parameters())
        if reference.device != images.device:
            teacher.to(images.device)
        images = images.to(reference.dtype).contiguous(memory_format=self.memory_format)
        logits = teacher(images)
        if logits.shape != (images.shape[0], self.num_classes):
            raise ValueError(
                f"The teacher gives logits of shape {tuple(logits.shape)} for "
                f"{images.shape[0]} images, not one logit per each of the data's "
                f"{self.num_classes} classes; check model.teacher.class_indices."
            )
        return logits

    def training_loss(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """``(images (B, 3, H, W), labels (B,) or mixed targets (B, C)) -> (loss, logits
        (B, C))``: :func:`distillation_terms` with the teacher's logits on the same images,
        weighted by :func:`distillation_loss`;
        the logits returned (for ``train/acc1``) are the mean of the student's heads."""
        outputs = self(images)
        class_logits, dist_logits = outputs if isinstance(outputs, tuple) else (outputs, outputs)
        smoothed = smoothed_targets(targets, self.num_classes, self.label_smoothing)
        teacher = None if self.distillation == "none" else self.teacher_logits(images)
        class_term, dist_term = distillation_terms(
            class_logits, dist_logits, smoothed, teacher, self.distillation, self.tau
        )
        loss = distillation_loss(class_term, dist_term, self.alpha)
        if self._trainer is not None:
            terms = {"train/loss_cls": class_term.detach(), "train/loss_dist": dist_term.detach()}
            self.log_dict(terms, on_step=False, on_epoch=True)
        return loss, (class_logits + dist_logits) / 2

    def validation_step(self, batch: LabelledImages, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        trainer = self._trainer
        if (
            self._teacher_evaluated
            or self.distillation == "none"
            or trainer is None
            or trainer.sanity_checking
            or trainer.state.fn != TrainerFn.FITTING
        ):
            return
        self.val_teacher_acc1.update(self.teacher_logits(batch.images), batch.labels)
        self._teacher_updated = True
        self.log("val/teacher_acc1", self.val_teacher_acc1, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self._teacher_updated:
            self._teacher_evaluated = True
