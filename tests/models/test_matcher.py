"""Hungarian matcher: the optimal assignment, checked against brute force over permutations."""

from __future__ import annotations

import itertools

import pytest
import torch
from torchvision import ops

from glimpse.batches import DetectionTarget
from glimpse.models.matcher import HungarianMatcher

C = 4


def _random_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    centre = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    size = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
    return torch.cat([centre, size], dim=-1)


def _case(seed: int, num_queries: int, counts: list[int]):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(counts), num_queries, C + 1, generator=gen) * 2
    boxes = _random_boxes(len(counts) * num_queries, gen).view(len(counts), num_queries, 4)
    targets = [
        DetectionTarget(_random_boxes(n, gen), torch.randint(0, C, (n,), generator=gen))
        for n in counts
    ]
    return logits, boxes, targets


def _pair_cost(logits, boxes, target, weights) -> torch.Tensor:
    """The matching cost of every query and target of one image, pair by pair."""
    w_class, w_bbox, w_giou = weights
    prob = logits.softmax(-1)
    xyxy = ops.box_convert(boxes, "cxcywh", "xyxy")
    target_xyxy = ops.box_convert(target.boxes, "cxcywh", "xyxy")
    cost = torch.empty(len(boxes), len(target.labels))
    for q, j in itertools.product(range(len(boxes)), range(len(target.labels))):
        giou = ops.generalized_box_iou(xyxy[q : q + 1], target_xyxy[j : j + 1])[0, 0]
        cost[q, j] = (
            -w_class * prob[q, target.labels[j]]
            + w_bbox * (boxes[q] - target.boxes[j]).abs().sum()
            - w_giou * giou
        )
    return cost


def _brute_force(cost: torch.Tensor) -> float:
    """The least total cost over every injective assignment of targets to queries."""
    num_queries, n = cost.shape
    return min(
        sum(cost[q, j].item() for j, q in enumerate(chosen))
        for chosen in itertools.permutations(range(num_queries), n)
    )


@pytest.mark.parametrize("weights", [(1.0, 5.0, 2.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0, 0, 1)])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matcher_equals_brute_force(seed, weights):
    """Per image (3, 0, 1 and 2 targets among 5 queries) the matched pairs' total cost is the
    minimum over all permutations, every target is matched once, queries at most once."""
    logits, boxes, targets = _case(seed, num_queries=5, counts=[3, 0, 1, 2])
    indices = HungarianMatcher(*weights)(logits, boxes, targets)
    assert len(indices) == len(targets)
    for b, (pred_idx, target_idx) in enumerate(indices):
        n = len(targets[b].labels)
        assert pred_idx.dtype == target_idx.dtype == torch.int64
        assert sorted(target_idx.tolist()) == list(range(n))
        assert len(set(pred_idx.tolist())) == n
        cost = _pair_cost(logits[b], boxes[b], targets[b], weights)
        total = cost[pred_idx, target_idx].sum().item() if n else 0.0
        assert total == pytest.approx(_brute_force(cost), abs=1e-5)


def test_matcher_with_more_targets_than_queries_matches_every_query():
    """With n > Q every query gets a target and the total is the brute-force minimum over the
    transposed problem."""
    logits, boxes, targets = _case(7, num_queries=2, counts=[3])
    pred_idx, target_idx = HungarianMatcher()(logits, boxes, targets)[0]
    assert sorted(pred_idx.tolist()) == [0, 1]
    cost = _pair_cost(logits[0], boxes[0], targets[0], (1.0, 5.0, 2.0))
    assert cost[pred_idx, target_idx].sum().item() == pytest.approx(_brute_force(cost.T))


def test_matcher_with_no_targets_in_the_batch():
    """A batch without any box gives empty index pairs."""
    logits, boxes, targets = _case(0, num_queries=3, counts=[0, 0])
    for pred_idx, target_idx in HungarianMatcher()(logits, boxes, targets):
        assert pred_idx.numel() == target_idx.numel() == 0


def test_matcher_cost_weights_decide_between_class_and_box():
    """Query 0 has the right box but a low class probability, query 1 the right class but a
    distant box: the box cost picks query 0, the class cost picks query 1."""
    target = DetectionTarget(torch.tensor([[0.3, 0.3, 0.2, 0.2]]), torch.tensor([2]))
    logits = torch.zeros(1, 2, C + 1)
    logits[0, 1, 2] = 5.0
    boxes = torch.tensor([[[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]])
    by_box = HungarianMatcher(cost_class=1, cost_bbox=5, cost_giou=2)(logits, boxes, [target])
    by_class = HungarianMatcher(cost_class=1, cost_bbox=0, cost_giou=0)(logits, boxes, [target])
    assert by_box[0][0].tolist() == [0]
    assert by_class[0][0].tolist() == [1]


def test_matcher_rejects_all_zero_weights():
    """All three cost weights at 0 is a configuration error."""
    with pytest.raises(ValueError, match="nonzero"):
        HungarianMatcher(0, 0, 0)
