"""Box formats and the generalized IoU of DETR (Carion et al. 2020), on torchvision.ops.

The model predicts normalised ``(cx, cy, w, h)``; the GIoU cost and loss, and the evaluation,
want corners ``(x0, y0, x1, y1)``. Generalized IoU (Rezatofighi et al. 2019) of boxes ``A, B``
with smallest enclosing box ``C``:

    ``GIoU(A, B) = IoU(A, B) - |C \\ (A ∪ B)| / |C|``,  in ``[-1, 1]``, 1 only for ``A = B``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision import ops


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` centre and size ``(cx, cy, w, h)`` -> corners ``(x0, y0, x1, y1)``."""
    return ops.box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` corners ``(x0, y0, x1, y1)`` -> centre and size ``(cx, cy, w, h)``."""
    return ops.box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise GIoU of corner boxes ``(N, 4)`` and ``(M, 4)`` -> ``(N, M)``.

    Boxes need ``x0 <= x1`` and ``y0 <= y1``; a pair of identical zero-area boxes has no union
    and gives NaN (the data drops degenerate boxes and the model's sigmoid sizes are positive).
    """
    return ops.generalized_box_iou(boxes1, boxes2)


def batched_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of every pair within each batch element: corner boxes ``(B, N, 4)`` and
    ``(B, M, 4)`` -> ``(B, N, M)``; element ``b`` equals ``generalized_box_iou(boxes1[b],
    boxes2[b])``. Same conditions as :func:`generalized_box_iou`."""
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    first, second = boxes1[:, :, None, :], boxes2[:, None, :, :]
    inner = (
        torch.minimum(first[..., 2:], second[..., 2:])
        - torch.maximum(first[..., :2], second[..., :2])
    ).clamp(min=0)
    intersection = inner[..., 0] * inner[..., 1]
    union = area1[:, :, None] + area2[:, None, :] - intersection
    outer = torch.maximum(first[..., 2:], second[..., 2:]) - torch.minimum(
        first[..., :2], second[..., :2]
    )
    enclosing = outer[..., 0] * outer[..., 1]
    return intersection / union - (enclosing - union) / enclosing
