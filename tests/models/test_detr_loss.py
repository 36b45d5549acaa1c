"""DETR's set criterion and post-processing: perfect predictions, empty images, the no-object
weight, auxiliary layers, box-count normalisation and absolute boxes."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.testing import assert_close
from torchvision import ops

from glimpse.batches import DetectionTarget
from glimpse.models.detr import DETROutput
from glimpse.models.detr_loss import SetCriterion, cardinality_error, postprocess
from glimpse.models.matcher import HungarianMatcher

C, Q = 3, 6


def _targets(seed: int = 0, counts: tuple[int, ...] = (2, 0, 3)) -> list[DetectionTarget]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in counts:
        centre = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
        size = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
        out.append(
            DetectionTarget(torch.cat([centre, size], -1), torch.randint(0, C, (n,), generator=gen))
        )
    return out


def _random_layer(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, Q, C + 1, generator=gen)
    boxes = torch.rand(batch, Q, 4, generator=gen) * 0.5 + 0.1
    return logits, boxes


def _criterion(eos_coef: float = 0.1) -> SetCriterion:
    return SetCriterion(C, HungarianMatcher(), eos_coef=eos_coef)


def _perfect(targets: list[DetectionTarget], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits 20 above the rest on the target class at queries Q-1, Q-2, ... and on no-object
    elsewhere; boxes equal to the targets there and random elsewhere."""
    logits, boxes = _random_layer(len(targets), seed)
    logits = torch.zeros_like(logits)
    logits[..., C] = 20.0
    for b, target in enumerate(targets):
        for j, (box, label) in enumerate(zip(target.boxes, target.labels, strict=True)):
            logits[b, Q - 1 - j] = 0.0
            logits[b, Q - 1 - j, label] = 20.0
            boxes[b, Q - 1 - j] = box
    return logits, boxes


def test_loss_is_near_zero_for_perfect_predictions():
    """Confident right classes on matched queries, confident no-object elsewhere and exact
    boxes give (near) zero CE, L1 and GIoU losses on every layer, and no cardinality error."""
    targets = _targets()
    logits, boxes = _perfect(targets)
    output = DETROutput(logits, boxes, [(logits, boxes)])
    losses = _criterion()(output, targets)
    for key in ("loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_bbox_0", "loss_giou_0"):
        assert losses[key].item() < 1e-3, key
    assert losses["cardinality_error"].item() == 0


def test_loss_is_finite_for_images_without_boxes():
    """A batch without any box: finite CE (all queries target no-object), zero box losses,
    finite gradients."""
    targets = _targets(counts=(0, 0))
    logits, boxes = _random_layer(2, seed=1)
    logits.requires_grad_(True)
    boxes.requires_grad_(True)
    losses = _criterion()(DETROutput(logits, boxes, []), targets)
    assert all(torch.isfinite(value) for value in losses.values())
    assert losses["loss_bbox"].item() == losses["loss_giou"].item() == 0
    expected_ce = torch.nn.functional.cross_entropy(
        logits.detach().flatten(0, 1), torch.full((2 * Q,), C)
    )
    assert_close(losses["loss_ce"], expected_ce)
    losses["loss"].backward()
    assert torch.isfinite(logits.grad).all()


def test_cross_entropy_weights_no_object_by_eos_coef():
    """loss_ce is the weighted mean Σ w_y (-log p_y) / Σ w_y with w = 0.1 for no-object and 1
    for the classes, over every query, unmatched queries targeting no-object."""
    targets = _targets()
    logits, boxes = _random_layer(len(targets), seed=2)
    criterion = _criterion(eos_coef=0.1)
    indices = criterion.matcher(logits, boxes, targets)
    classes = torch.full((len(targets), Q), C)
    for b, (pred_idx, target_idx) in enumerate(indices):
        classes[b, pred_idx] = targets[b].labels[target_idx]
    nll = -logits.log_softmax(-1).gather(-1, classes[..., None])[..., 0]
    weight = torch.where(classes == C, 0.1, 1.0)
    expected = (weight * nll).sum() / weight.sum()
    loss_ce = criterion(DETROutput(logits, boxes, []), targets)["loss_ce"]
    assert_close(loss_ce, expected)
    unweighted = _criterion(eos_coef=1.0)(DETROutput(logits, boxes, []), targets)["loss_ce"]
    assert_close(unweighted, nll.mean())
    assert not torch.isclose(loss_ce, unweighted)


def test_auxiliary_layers_get_suffixed_losses_and_enter_the_total():
    """Two auxiliary layers add loss_*_0 and loss_*_1, and "loss" is Σ over the three layers of
    λ_ce CE + λ_L1 L1 + λ_giou GIoU with the paper's (1, 5, 2)."""
    targets = _targets()
    layers = [_random_layer(len(targets), seed) for seed in (3, 4, 5)]
    losses = _criterion()(DETROutput(*layers[-1], layers[:-1]), targets)
    names = ("loss_ce", "loss_bbox", "loss_giou")
    expected_keys = {*names, *(f"{n}_{i}" for n in names for i in (0, 1))}
    assert set(losses) == expected_keys | {"loss", "cardinality_error"}
    total = sum(
        1 * losses[f"loss_ce{s}"] + 5 * losses[f"loss_bbox{s}"] + 2 * losses[f"loss_giou{s}"]
        for s in ("", "_0", "_1")
    )
    assert_close(losses["loss"], total)
    alone = _criterion()(DETROutput(*layers[0], []), targets)
    for name in names:
        assert_close(losses[f"{name}_0"], alone[name])


def test_box_losses_are_normalised_by_the_number_of_boxes_in_the_batch():
    """loss_bbox = Σ_matched ‖b - b̂‖₁ / N and loss_giou = Σ (1 - GIoU) / N with N the boxes of
    the whole batch (5 here), so doubling the batch leaves them unchanged."""
    targets = _targets()
    logits, boxes = _random_layer(len(targets), seed=6)
    criterion = _criterion()
    indices = criterion.matcher(logits, boxes, targets)
    l1 = giou = 0.0
    for b, (pred_idx, target_idx) in enumerate(indices):
        pred, true = boxes[b, pred_idx], targets[b].boxes[target_idx]
        l1 += (pred - true).abs().sum().item()
        pairwise = ops.generalized_box_iou(
            ops.box_convert(pred, "cxcywh", "xyxy"), ops.box_convert(true, "cxcywh", "xyxy")
        )
        giou += (1 - torch.diagonal(pairwise)).sum().item()
    losses = criterion(DETROutput(logits, boxes, []), targets)
    assert losses["loss_bbox"].item() == pytest.approx(l1 / 5, rel=1e-5)
    assert losses["loss_giou"].item() == pytest.approx(giou / 5, rel=1e-5)
    doubled = criterion(DETROutput(logits.repeat(2, 1, 1), boxes.repeat(2, 1, 1), []), targets * 2)
    for key in ("loss_ce", "loss_bbox", "loss_giou"):
        assert_close(doubled[key], losses[key])


#: The boxes of each process's batch in the two-process test: 5 and 1, a mean of 3.
RANK_COUNTS = ((2, 0, 3), (1, 0, 0))


def _rank_losses(rank: int, rendezvous: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        targets = _targets(seed=rank, counts=RANK_COUNTS[rank])
        logits, boxes = _random_layer(len(targets), seed=7 + rank)
        losses = _criterion()(DETROutput(logits, boxes, []), targets)
        torch.save({k: v.detach() for k, v in losses.items()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_box_count_is_the_mean_over_two_processes(tmp_path):
    """Each process divides its box losses by the mean box count of all processes (DETR's
    all-reduced ``num_boxes``), not by its own: 5 and 1 boxes give 3 for both."""
    out = str(tmp_path / "losses")
    mp.start_processes(
        _rank_losses,
        args=(str(tmp_path / "rendezvous"), out),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    for rank, counts in enumerate(RANK_COUNTS):
        targets = _targets(seed=rank, counts=counts)
        logits, boxes = _random_layer(len(targets), seed=7 + rank)
        alone = _criterion()(DETROutput(logits, boxes, []), targets)
        reduced = torch.load(f"{out}.{rank}", weights_only=True)
        for key in ("loss_bbox", "loss_giou"):
            assert_close(reduced[key], alone[key] * sum(counts) / 3)
        assert_close(reduced["loss_ce"], alone["loss_ce"])


def test_cardinality_error_counts_non_empty_predictions():
    """Three queries predicting objects for one box, and none for an empty image: |3 - 1| and
    |0 - 0|, mean 1."""
    logits = torch.zeros(2, Q, C + 1)
    logits[..., C] = 1.0
    logits[0, :3, 0] = 2.0
    assert cardinality_error(logits, _targets(counts=(1, 0))).item() == 1.0


def test_postprocess_gives_absolute_xyxy_boxes_and_drops_no_object():
    """Scores and labels are the best object class even where no-object is more probable, and
    normalised cxcywh boxes become (x0, y0, x1, y1) pixels of the original (h, w)."""
    logits = torch.tensor([[[2.0, 0.0, 0.0, 5.0], [0.0, 1.0, 3.0, 0.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 1.0, 1.0], [0.25, 0.5, 0.1, 0.2]]])
    (result,) = postprocess(DETROutput(logits, boxes, []), torch.tensor([[100, 200]]))
    prob = logits[0].softmax(-1)
    assert result["labels"].tolist() == [0, 2]
    assert_close(result["scores"], torch.stack([prob[0, 0], prob[1, 2]]))
    expected = torch.tensor([[0.0, 0.0, 200.0, 100.0], [40.0, 40.0, 60.0, 60.0]])
    assert_close(result["boxes"], expected)
    assert result["scores"][0] < prob[0, C]
