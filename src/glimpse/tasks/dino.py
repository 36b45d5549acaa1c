"""DINO, self-distillation with no labels (Caron et al. 2021), as a task.

Multi-crop views of each image (:mod:`glimpse.data.ssl.views`): 2 global crops, then ``N``
local crops. The student ``g_s`` (backbone and :class:`~glimpse.models.ssl_heads.DINOHead`)
sees every view, the teacher ``g_t`` (its EMA, :class:`~glimpse.tasks.momentum_teacher.
MomentumTeacherTask`, ``lambda`` from 0.996 to 1 on a cosine) only the global ones:

    P_t(x) = softmax((g_t(x) - c) / tau_t),  P_s(x) = softmax(g_s(x) / tau_s)   (eq. 1)
    L = mean over global x and every view x' != x of H(P_t(x), P_s(x'))         (eq. 3)

The centre ``c`` is an EMA (momentum 0.9) of the teacher's batch mean, all-reduced over
processes (:class:`~glimpse.models.ssl_losses.DINOLoss`); centring and sharpening by the low
teacher temperature keep the outputs from collapsing. As in DINO's code:

* crops of one size go through the backbone together (the global pair, then the local crops),
  and the teacher sees the global pair only;
* ``tau_t`` rises linearly from 0.04 to 0.07 over the first 30 epochs, ``tau_s`` = 0.1;
* the head's last layer gets no update during the first ``freeze_last_layer`` epochs (its
  gradients are dropped, so AdamW neither moves nor decays it);
* the gradient of each parameter is clipped to norm ``trainer.gradient_clip_val`` (3.0) on its
  own (DINO's ``clip_gradients``), not the global norm;
* AdamW with lr 5e-4 per 256 images, 10 warm-up epochs, weight decay on a cosine from 0.04 to
  0.4 (``optimizer.weight_decay_end``).

The evaluated and exported backbone is the teacher's, as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from glimpse.models.momentum import teacher_temperature
from glimpse.models.ssl_heads import DINOHead
from glimpse.models.ssl_losses import DINOLoss
from glimpse.tasks.momentum_teacher import MomentumTeacherTask

#: The views the teacher sees: DINO's two global crops.
NUM_GLOBAL_VIEWS = 2


class DINO(MomentumTeacherTask):
    """DINO (module docstring); the arguments of :class:`MomentumTeacherTask` and:

    Args:
        head: :class:`~glimpse.models.ssl_heads.DINOHead` arguments (out_dim 65536, hidden_dim
            2048, bottleneck_dim 256, norm_last_layer).
        teacher_temp: ``start`` (0.04) and ``end`` (0.07) of the teacher temperature and the
            ``warmup_epochs`` (30) of its linear rise.
        student_temp: ``tau_s`` (0.1).
        center_momentum: the centre's EMA momentum (0.9).
        freeze_last_layer: epochs during which the head's last layer is not updated (1).
    """

    FEATURES_FROM = "teacher"

    def __init__(
        self,
        spec: dict[str, Any],
        backbone: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        head: dict[str, Any] | None = None,
        teacher_temp: dict[str, Any] | None = None,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        freeze_last_layer: int = 1,
        teacher_momentum: float = 0.996,
        probe: dict[str, Any] | None = None,
        knn: dict[str, Any] | None = None,
        image_size_arg: str | None = "img_size",
        figures: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            spec=spec,
            backbone=backbone,
            optimizer=optimizer,
            scheduler=scheduler,
            teacher_momentum=teacher_momentum,
            probe=probe,
            knn=knn,
            image_size_arg=image_size_arg,
            figures=figures,
            head=head or {},
            teacher_temp=teacher_temp or {"start": 0.04, "end": 0.07, "warmup_epochs": 30},
            student_temp=float(student_temp),
            center_momentum=float(center_momentum),
            freeze_last_layer=int(freeze_last_layer),
        )
        self.criterion = DINOLoss(
            self.student["head"].last_layer.out_features,
            center_momentum=center_momentum,
            student_temp=student_temp,
            num_global_views=NUM_GLOBAL_VIEWS,
        )

    def build_head(self, feature_dim: int) -> nn.Module:
        """The DINO head: ``(B, D) -> (B, K)`` prototype logits."""
        return DINOHead(feature_dim, **self.hparams["head"])

    def teacher_temperature(self) -> float:
        """``tau_t`` of the current epoch."""
        schedule = self.hparams["teacher_temp"]
        return teacher_temperature(
            self.current_epoch,
            float(schedule["warmup_epochs"]),
            float(schedule["start"]),
            float(schedule["end"]),
        )

    def _student_logits(self, views: tuple[Tensor, ...]) -> Tensor:
        """The student's logits of every view, view-major ``(V * B, K)``, the views of one size
        through the backbone in one batch."""
        features, start = [], 0
        while start < len(views):
            end = start
            while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
                end += 1
            features.append(self.student["backbone"](torch.cat(views[start:end])))
            start = end
        return self.student["head"](torch.cat(features))

    def ssl_step(self, views: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """DINO's loss of the multi-crop ``views``, and the teacher's features of the first."""
        if len(views) < NUM_GLOBAL_VIEWS:
            raise ValueError(
                f"DINO trains on 2 global views (and local crops) per image, the batch has "
                f"{len(views)}; set data.views.kind=multicrop."
            )
        batch = views[0].shape[0]
        with torch.no_grad():
            teacher_features = self.teacher["backbone"](torch.cat(views[:NUM_GLOBAL_VIEWS]))
            teacher_out = self.teacher["head"](teacher_features)
        temperature = self.teacher_temperature()
        loss = self.criterion(self._student_logits(views), teacher_out, temperature)
        self.criterion.update_center(teacher_out)
        return loss, teacher_features[:batch]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        self.log("train/teacher_temp", self.teacher_temperature())

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """During the first ``freeze_last_layer`` epochs drop the head's last-layer gradients,
        so the optimizer leaves those parameters alone (DINO's ``cancel_gradients_last_layer``)."""
        if self.current_epoch >= self.hparams["freeze_last_layer"]:
            return
        for p in self.student["head"].last_layer.parameters():
            p.grad = None

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip each parameter's gradient to norm ``gradient_clip_val`` on its own (DINO's
        ``clip_gradients``); ``gradient_clip_algorithm=value`` keeps Lightning's clipping."""
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm == "value":
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    torch.nn.utils.clip_grad_norm_(p, gradient_clip_val)
