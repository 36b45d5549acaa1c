"""The losses of BYOL (Grill et al. 2020) and DINO (Caron et al. 2021).

BYOL (eq. 2): the online prediction ``q(z)`` of one view regresses the target projection
``z'`` of the other, both L2-normalised: ``||p / ||p|| - z' / ||z'|| ||^2 = 2 - 2 cos(p, z')``,
symmetrised over the two views (``L + L~``).

DINO (eqs. 2-4): the teacher's output of each global view ``x_i``, centred and sharpened,
``P_t(x_i) = softmax((g_t(x_i) - c) / tau_t)``, is the target of the student's
``log P_s(x') = log_softmax(g_s(x') / tau_s)`` for every other view ``x'``; the loss is the
mean of ``H(P_t(x_i), P_s(x')) = -sum_k P_t log P_s`` over those pairs and the batch. The
centre ``c`` is an EMA of the teacher's batch mean, ``c <- m c + (1 - m) mean(g_t)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch import distributed as dist
from torch.nn import functional as F


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's regression loss, ``2 - 2 cos(p_b, sg(z_b))`` averaged over the batch.

    ``p (B, E)`` is the online network's prediction, ``z (B, E)`` the target network's
    projection of the other view; no gradient flows into ``z`` (stop-gradient). Computed in
    float32. Ranges over ``[0, 4]``.
    """
    if p.shape != z.shape or p.ndim != 2:
        raise ValueError(
            f"byol_loss needs predictions and projections of one shape (B, E), got "
            f"{tuple(p.shape)} and {tuple(z.shape)}."
        )
    cosine = F.cosine_similarity(p.float(), z.detach().float(), dim=-1, eps=1e-8)
    return (2.0 - 2.0 * cosine).mean()


def byol_symmetric_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """BYOL's total loss ``L + L~`` (sec. 3.3): ``byol_loss(p1, z2) + byol_loss(p2, z1)``, where
    ``p_v`` is the online prediction of view ``v`` and ``z_v`` the target projection of view
    ``v``, all ``(B, E)``. Ranges over ``[0, 8]``."""
    return byol_loss(p1, z2) + byol_loss(p2, z1)


class DINOLoss(nn.Module):
    """DINO's cross-view cross-entropy with a centred, sharpened teacher.

    Args:
        out_dim: ``K``, the number of prototypes (the head's outputs).
        center_momentum: ``m`` of the centre's EMA (0.9).
        student_temp: ``tau_s`` (0.1).
        num_global_views: ``G``, the views the teacher sees (DINO: the 2 global crops), which
            are also the first ``G`` of the student's views.

    ``center (1, K)`` is a buffer (saved in checkpoints), zero at first. :meth:`forward` reads it
    and does not change it: call :meth:`update_center` with the same teacher output after the
    loss, as DINO's code does at the end of its ``forward``.
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int,
        center_momentum: float = 0.9,
        student_temp: float = 0.1,
        num_global_views: int = 2,
    ) -> None:
        super().__init__()
        if not 0.0 <= center_momentum < 1.0 or student_temp <= 0 or num_global_views < 1:
            raise ValueError(
                f"DINOLoss needs center_momentum in [0, 1) (got {center_momentum}), "
                f"student_temp > 0 (got {student_temp}) and num_global_views >= 1 (got "
                f"{num_global_views})."
            )
        self.out_dim = out_dim
        self.center_momentum = center_momentum
        self.student_temp = student_temp
        self.num_global_views = num_global_views
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: Tensor, teacher_out: Tensor, teacher_temp: float) -> Tensor:
        """The mean cross-entropy over every (teacher view ``i``, student view ``v != i``) pair.

        ``student_out (V * B, K)``: the student's logits of all ``V`` views, view-major (view 0's
        ``B`` rows, then view 1's, ...; the global views first). ``teacher_out (G * B, K)``:
        the teacher's logits of the ``G`` global views, same order. ``teacher_temp``: ``tau_t``.
        Returns a scalar, computed in float32 outside autocast; gradients flow into
        ``student_out`` only.
        """
        views, batch = self._views(student_out, teacher_out)
        with torch.autocast(student_out.device.type, enabled=False):
            log_student = F.log_softmax(student_out.float() / self.student_temp, dim=-1)
            centred = teacher_out.detach().float() - self.center
            teacher = F.softmax(centred / teacher_temp, dim=-1)
            log_student = log_student.reshape(views, batch, self.out_dim)
            teacher = teacher.reshape(self.num_global_views, batch, self.out_dim)
            # cross[i, v] = mean over the batch of H(P_t(x_i), P_s(x_v)).
            cross = -torch.einsum("ibk,vbk->iv", teacher, log_student) / batch
        same_view = torch.eye(self.num_global_views, views, dtype=torch.bool, device=cross.device)
        return cross[~same_view].mean()

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor) -> None:
        """``c <- m c + (1 - m) mean(teacher_out)``, the mean over the rows ``(N, K)`` of every
        process: under ``torch.distributed`` the row sums are all-reduced and divided by ``N``
        times the world size, as in DINO's code."""
        total = teacher_out.detach().float().sum(dim=0, keepdim=True)
        count = teacher_out.shape[0]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            count *= dist.get_world_size()
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)

    def _views(self, student_out: Tensor, teacher_out: Tensor) -> tuple[int, int]:
        """``(V, B)`` from the shapes, or a ValueError saying what does not fit."""
        global_views = self.num_global_views
        if (
            student_out.ndim != 2
            or teacher_out.ndim != 2
            or student_out.shape[1] != self.out_dim
            or teacher_out.shape[1] != self.out_dim
            or teacher_out.shape[0] % global_views
        ):
            raise ValueError(
                f"DINOLoss expects student logits (V*B, {self.out_dim}) and teacher logits "
                f"({global_views}*B, {self.out_dim}), got {tuple(student_out.shape)} and "
                f"{tuple(teacher_out.shape)}."
            )
        batch = teacher_out.shape[0] // global_views
        views = student_out.shape[0] // batch if batch else 0
        if batch == 0 or student_out.shape[0] % batch or views < global_views:
            raise ValueError(
                f"The student's {student_out.shape[0]} rows are not V >= {global_views} views "
                f"of the teacher's batch of {batch}; concatenate the views view-major."
            )
        return views, batch
