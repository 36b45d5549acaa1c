"""COCO box mAP with pycocotools' COCOeval on a dataset's own annotation file.

COCOeval (Lin et al. 2014) matches detections to ground truth per image and category at ten
IoU thresholds 0.50:0.05:0.95, ignores crowd regions and reports AP averaged over them (the
COCO "mAP"), at IoU 0.50 and 0.75, and for small (< 32² px), medium and large boxes. A value
of -1 means the evaluated images hold no ground-truth box of that kind (COCOeval's convention,
which torchmetrics shares).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from glimpse.metrics.object_lists import ObjectListMetric
from glimpse.utils.coco import load_coco

#: COCOeval's first six summary statistics, in its order.
BOX_METRICS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")


def coco_box_metrics(
    ground_truth: COCO, detections: Sequence[dict[str, Any]], image_ids: Sequence[int]
) -> dict[str, float]:
    """COCOeval's box metrics (:data:`BOX_METRICS`) of ``detections`` on ``image_ids``.

    Args:
        ground_truth: the dataset's annotations.
        detections: COCO result records ``{"image_id", "category_id", "bbox": [x, y, w, h]
            in original pixels, "score"}``.
        image_ids: the images evaluated (an image without detections counts its misses).
    """
    if not image_ids:
        raise ValueError("COCO evaluation needs at least one evaluated image.")
    evaluated = sorted(set(int(i) for i in image_ids))
    if not detections:
        has_boxes = any(
            not a.get("iscrowd", 0)
            for a in ground_truth.loadAnns(ground_truth.getAnnIds(evaluated))
        )
        return {name: 0.0 if has_boxes else -1.0 for name in BOX_METRICS}
    with contextlib.redirect_stdout(io.StringIO()):
        results = ground_truth.loadRes(list(detections))
        evaluator = COCOeval(ground_truth, results, iouType="bbox")
        evaluator.params.imgIds = evaluated
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(BOX_METRICS, evaluator.stats, strict=False)}


def detection_records(
    image_id: int,
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    category_ids: Sequence[int],
) -> list[dict[str, Any]]:
    """COCO result records of one image's detections: ``boxes (n, 4)`` absolute xyxy pixels of
    the original image, ``scores (n,)``, contiguous ``labels (n,)`` mapped to COCO's
    ``category_ids``."""
    xywh = boxes.detach().float().cpu().clone()
    xywh[:, 2:] -= xywh[:, :2]
    return [
        {
            "image_id": int(image_id),
            "category_id": int(category_ids[int(label)]),
            "bbox": [round(float(v), 3) for v in box],
            "score": float(score),
        }
        for box, score, label in zip(xywh, scores.tolist(), labels.tolist(), strict=True)
    ]


class CocoBoxMAP(ObjectListMetric):
    """:func:`coco_box_metrics` over an evaluation pass, on the annotation file of the data.

    ``update(records, image_ids)`` adds COCO result records (see :func:`detection_records`)
    and the ids of the images they come from; under ``torch.distributed`` every rank's lists
    are gathered before :meth:`compute` (:class:`ObjectListMetric`). The annotation file is
    read once, at the first :meth:`compute`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    OBJECT_STATES = ("detections", "image_ids")

    detections: list[dict[str, Any]]
    image_ids: list[int]

    def __init__(self, annotation_file: str | Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.annotation_file = Path(annotation_file)
        self._ground_truth: COCO | None = None

    def update(self, records: Sequence[dict[str, Any]], image_ids: Sequence[int]) -> None:
        self.detections.extend(records)
        self.image_ids.extend(int(i) for i in image_ids)

    def compute(self) -> dict[str, Tensor]:
        if self._ground_truth is None:
            self._ground_truth = load_coco(self.annotation_file)
        metrics = coco_box_metrics(self._ground_truth, self.detections, self.image_ids)
        return {name: torch.tensor(value, dtype=torch.float32) for name, value in metrics.items()}
