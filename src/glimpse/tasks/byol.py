"""BYOL, Bootstrap Your Own Latent (Grill et al. 2020), as a task.

Two augmented views ``v, v'`` of each image (:mod:`glimpse.data.ssl.views`). The online
network (backbone ``f_theta``, projector ``g_theta``, predictor ``q_theta``) predicts the
target network's projection of the other view; the target (``f_xi``, ``g_xi``) is the EMA of
the online backbone and projector (:class:`~glimpse.tasks.momentum_teacher.
MomentumTeacherTask`, ``tau`` from 0.996 to 1 on a cosine):

    z = g_theta(f_theta(v)),  p = q_theta(z),  z' = g_xi(f_xi(v'))          (sec. 3.3)
    L = 2 - 2 cos(p, sg(z')),  total L + L~ (the views swapped)             (eq. 2)

No gradient reaches the target (stop-gradient ``sg``). Each view goes through the networks on
its own, so BatchNorm normalises each view's batch separately, as in BYOL. The paper trains
with LARS (lr 0.2 per 256 images, weight decay 1.5e-6, biases and norms excluded) and a cosine
schedule after 10 warm-up epochs; the evaluated and exported backbone is the online one.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from glimpse.models.ssl_heads import MLPHead
from glimpse.models.ssl_losses import byol_symmetric_loss
from glimpse.tasks.momentum_teacher import MomentumTeacherTask


class BYOL(MomentumTeacherTask):
    """BYOL (module docstring); the arguments of :class:`MomentumTeacherTask` and:

    Args:
        projector: :class:`~glimpse.models.ssl_heads.MLPHead` arguments of ``g`` (hidden_dim
            4096, out_dim 256 in the paper).
        predictor: arguments of ``q`` (hidden_dim 4096; its output has the projection's
            width).
    """

    FEATURES_FROM = "student"
    NETWORKS = (*MomentumTeacherTask.NETWORKS, "predictor")

    def __init__(
        self,
        spec: dict[str, Any],
        backbone: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        projector: dict[str, Any] | None = None,
        predictor: dict[str, Any] | None = None,
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
            projector=projector or {},
            predictor=predictor or {},
        )
        projection_dim = self.student["head"].net[-1].out_features
        self.predictor = MLPHead(projection_dim, **self._head_args("predictor", projection_dim))

    def _head_args(self, name: str, out_dim: int | None = None) -> dict[str, Any]:
        args = dict(self.hparams[name])
        if out_dim is not None:
            args["out_dim"] = out_dim
        return args

    def build_head(self, feature_dim: int) -> nn.Module:
        """The projector ``g``: ``(B, D) -> (B, out_dim)``."""
        return MLPHead(feature_dim, **self._head_args("projector"))

    def ssl_step(self, views: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """``L + L~`` of the two views ``(B, 3, S, S)``, and the online features of the first."""
        if len(views) != 2:
            raise ValueError(
                f"BYOL trains on 2 views per image, the batch has {len(views)}; set "
                "data.views.kind=byol."
            )
        features, predictions, targets = [], [], []
        for view in views:
            feature = self.student["backbone"](view)
            features.append(feature)
            predictions.append(self.predictor(self.student["head"](feature)))
            targets.append(self.teacher["head"](self.teacher["backbone"](view)))
        loss = byol_symmetric_loss(predictions[0], predictions[1], targets[0], targets[1])
        return loss, features[0].detach()
