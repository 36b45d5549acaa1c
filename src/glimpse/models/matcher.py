"""The Hungarian matcher of DETR (Carion et al. 2020, sec. 3.1, eq. 1).

Each image's ``n`` targets are matched one-to-one to ``n`` of the ``Q`` predictions by the
permutation ``σ̂`` minimising ``Σ_i L_match(y_i, ŷ_σ(i))``, with the pairwise cost

    ``L_match = -λ_cls p̂(c_i) + λ_L1 ‖b_i - b̂‖₁ - λ_giou GIoU(b_i, b̂)``.

The cost matrices of the whole batch are computed at once on the device, each image's
predictions against its own targets only (targets padded to the batch's largest count, so the
work is ``B·Q·n_max``, where DETR's reference scores every prediction against every target of
the batch, ``B·Q·Σn``); the assignment is scipy's ``linear_sum_assignment`` per image, on the
CPU.

Targets are :class:`glimpse.batches.DetectionTarget`: ``boxes (n, 4)`` normalised cxcywh and
``labels (n,)`` int64 class indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from glimpse.batches import DetectionTarget
from glimpse.models.box_ops import batched_generalized_box_iou, cxcywh_to_xyxy


class HungarianMatcher(nn.Module):
    """``(logits (B, Q, C+1), boxes (B, Q, 4), targets) -> [(pred_idx (k,), target_idx (k,))]``.

    One pair of int64 CPU index tensors per image, ``k = min(Q, n)``, ``pred_idx`` ascending:
    prediction ``pred_idx[j]`` is matched to target ``target_idx[j]``.

    Args:
        cost_class: ``λ_cls``, weight of the negated class probability.
        cost_bbox: ``λ_L1``, weight of the L1 distance between normalised cxcywh boxes.
        cost_giou: ``λ_giou``, weight of the negated GIoU.
    """

    def __init__(
        self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0
    ) -> None:
        super().__init__()
        if cost_class == cost_bbox == cost_giou == 0:
            raise ValueError("HungarianMatcher needs a nonzero cost weight; all three are 0.")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @torch.no_grad()
    def forward(
        self, logits: Tensor, boxes: Tensor, targets: Sequence[DetectionTarget]
    ) -> list[tuple[Tensor, Tensor]]:
        batch, num_queries = logits.shape[:2]
        sizes = [len(t.labels) for t in targets]
        most = max(sizes, default=0)
        if most == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return [(empty, empty) for _ in targets]
        prob = logits.float().softmax(-1)
        pred = boxes.float()
        labels = logits.new_zeros(batch, most, dtype=torch.int64)
        # Padding targets are whole-image boxes, so that their (unused) GIoU is finite.
        target_boxes = pred.new_full((batch, most, 4), 0.5)
        target_boxes[..., 2:] = 1.0
        for index, target in enumerate(targets):
            labels[index, : sizes[index]] = target.labels
            target_boxes[index, : sizes[index]] = target.boxes
        giou = batched_generalized_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target_boxes))
        class_prob = prob.gather(2, labels[:, None, :].expand(batch, num_queries, most))
        cost = (
            -self.cost_class * class_prob
            + self.cost_bbox * torch.cdist(pred, target_boxes, p=1)
            - self.cost_giou * giou
        )
        blocks = cost.cpu()
        indices = []
        for index, size in enumerate(sizes):
            rows, cols = linear_sum_assignment(blocks[index, :, :size].numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices
