"""DETR's set prediction loss and its post-processing (Carion et al. 2020, sec. 3.1, eq. 2).

After the Hungarian matching ``σ̂`` (:class:`glimpse.models.matcher.HungarianMatcher`) the
loss of one decoder layer is

    ``L = λ_ce CE + λ_L1 Σ_i ‖b_i - b̂_σ̂(i)‖₁ / N + λ_giou Σ_i (1 - GIoU(b_i, b̂_σ̂(i))) / N``,

where the cross-entropy covers every query (the unmatched ones target the no-object class ∅,
whose weight is ``eos_coef`` = 0.1 to balance the classes), and ``N`` is the number of target
boxes in the batch, summed over all processes under DDP and at least 1. The same loss is
applied to every decoder layer's predictions (auxiliary losses, sec. 3.2) and summed.

Targets are :class:`glimpse.batches.DetectionTarget`: ``boxes (n, 4)`` normalised cxcywh and
``labels (n,)`` int64 class indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from glimpse.batches import DetectionTarget
from glimpse.models.box_ops import cxcywh_to_xyxy
from glimpse.models.detr import DETROutput
from glimpse.models.matcher import HungarianMatcher


def num_boxes_in_batch(targets: Sequence[DetectionTarget], device: torch.device) -> Tensor:
    """``N``: the boxes of ``targets``, averaged over the processes when torch.distributed is
    initialised (each process then divides its sum by the global mean), clamped at 1."""
    count = torch.tensor(float(sum(len(t.labels) for t in targets)), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp(min=1)


class SetCriterion(nn.Module):
    """``(output: DETROutput, targets) -> dict`` of losses (scalars).

    Keys: ``loss_ce``, ``loss_bbox``, ``loss_giou`` of the last decoder layer, the same with
    suffix ``_i`` for auxiliary layer ``i`` (0 is the first decoder layer),
    ``cardinality_error`` (mean over images of ``|#{queries not predicting ∅} - n|``, last layer,
    no gradient) and ``loss``, the weighted sum over all layers.

    Args:
        num_classes: ``C``; class ``C`` is no-object.
        matcher: the Hungarian matcher, run on every layer.
        eos_coef: weight of the no-object class in the cross-entropy.
        weight_ce, weight_bbox, weight_giou: ``λ_ce``, ``λ_L1``, ``λ_giou``.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        eos_coef: float = 0.1,
        weight_ce: float = 1.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_ce = weight_ce
        self.weight_bbox = weight_bbox
        self.weight_giou = weight_giou
        class_weight = torch.ones(num_classes + 1)
        class_weight[-1] = eos_coef
        self.register_buffer("class_weight", class_weight, persistent=False)

    def layer_losses(
        self, logits: Tensor, boxes: Tensor, targets: Sequence[DetectionTarget], num_boxes: Tensor
    ) -> dict[str, Tensor]:
        """``loss_ce``, ``loss_bbox`` and ``loss_giou`` of one layer's ``logits (B, Q, C+1)``
        and ``boxes (B, Q, 4)``."""
        indices = self.matcher(logits, boxes, targets)
        device = logits.device
        batch_idx, pred_idx, labels, target_boxes = [], [], [], []
        for b, (target, (pred, tgt)) in enumerate(zip(targets, indices, strict=True)):
            pred, tgt = pred.to(device), tgt.to(device)
            batch_idx.append(torch.full_like(pred, b))
            pred_idx.append(pred)
            labels.append(target.labels.to(device)[tgt])
            target_boxes.append(target.boxes.to(device)[tgt])
        batch_idx, pred_idx = torch.cat(batch_idx), torch.cat(pred_idx)
        matched_targets = torch.cat(target_boxes).float()
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=device
        )
        target_classes[batch_idx, pred_idx] = torch.cat(labels)
        loss_ce = F.cross_entropy(
            logits.float().transpose(1, 2), target_classes, weight=self.class_weight
        )
        matched = boxes[batch_idx, pred_idx].float()
        loss_bbox = F.l1_loss(matched, matched_targets, reduction="sum") / num_boxes
        loss_giou = (
            generalized_box_iou_loss(
                cxcywh_to_xyxy(matched), cxcywh_to_xyxy(matched_targets), reduction="sum"
            )
            / num_boxes
        )
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def weighted(self, layer: dict[str, Tensor]) -> Tensor:
        """``λ_ce loss_ce + λ_L1 loss_bbox + λ_giou loss_giou`` of one layer."""
        return (
            self.weight_ce * layer["loss_ce"]
            + self.weight_bbox * layer["loss_bbox"]
            + self.weight_giou * layer["loss_giou"]
        )

    def forward(self, output: DETROutput, targets: Sequence[DetectionTarget]) -> dict[str, Tensor]:
        num_boxes = num_boxes_in_batch(targets, output.logits.device)
        losses = self.layer_losses(output.logits, output.boxes, targets, num_boxes)
        total = self.weighted(losses)
        for index, (logits, boxes) in enumerate(output.aux):
            layer = self.layer_losses(logits, boxes, targets, num_boxes)
            total = total + self.weighted(layer)
            losses.update({f"{key}_{index}": value for key, value in layer.items()})
        losses["loss"] = total
        losses["cardinality_error"] = cardinality_error(output.logits, targets)
        return losses


@torch.no_grad()
def cardinality_error(logits: Tensor, targets: Sequence[DetectionTarget]) -> Tensor:
    """Mean over images of ``|#{queries whose best class is not ∅} - n|``: ``logits
    (B, Q, C+1)`` -> scalar float. A diagnostic, not a loss."""
    predicted = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1).float()
    counts = torch.tensor([float(len(t.labels)) for t in targets], device=logits.device)
    return (predicted - counts).abs().mean()


@torch.no_grad()
def postprocess(output: DETROutput, orig_sizes: Tensor) -> list[dict[str, Tensor]]:
    """Detections in the original images' pixels, one dict per image.

    ``output`` of a batch, ``orig_sizes (B, 2)`` ``(h, w)`` -> per image ``scores (Q,)`` the
    probability of ``labels (Q,)``, the most probable object class (no-object is left out, as
    in DETR), and ``boxes (Q, 4)`` absolute ``(x0, y0, x1, y1)``: the normalised boxes are
    relative to the unpadded transformed image, which is a resize of the original.
    """
    prob = output.logits.float().softmax(-1)
    scores, labels = prob[..., :-1].max(-1)
    height, width = orig_sizes.to(prob).unbind(-1)
    scale = torch.stack([width, height, width, height], dim=-1)[:, None, :]
    boxes = cxcywh_to_xyxy(output.boxes.float()) * scale
    return [
        {"scores": s, "labels": c, "boxes": b}
        for s, c, b in zip(scores, labels, boxes, strict=True)
    ]
