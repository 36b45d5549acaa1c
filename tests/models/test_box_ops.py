"""Box conversions and generalized IoU against torchvision.ops and hand-computed values."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torchvision import ops

from glimpse.models.box_ops import (
    batched_generalized_box_iou,
    cxcywh_to_xyxy,
    generalized_box_iou,
    xyxy_to_cxcywh,
)


def _random_xyxy(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=gen)
    size = torch.rand(n, 2, generator=gen) * 0.5 + 0.01
    return torch.cat([corner, corner + size], dim=-1)


@pytest.mark.parametrize("shape", [(7,), (2, 5), (0,)])
def test_conversions_round_trip_and_equal_torchvision(shape):
    """cxcywh -> xyxy -> cxcywh is the identity (any leading dims) and both directions are
    torchvision's box_convert."""
    count = torch.Size(shape).numel()
    xyxy = _random_xyxy(count, seed=0).reshape(*shape, 4)
    cxcywh = xyxy_to_cxcywh(xyxy)
    assert cxcywh.shape == xyxy.shape
    assert_close(cxcywh_to_xyxy(cxcywh), xyxy)
    flat = cxcywh.reshape(-1, 4)
    assert_close(flat, ops.box_convert(xyxy.reshape(-1, 4), "xyxy", "cxcywh"))
    assert_close(cxcywh_to_xyxy(flat), ops.box_convert(flat, "cxcywh", "xyxy"))


def test_cxcywh_to_xyxy_by_hand():
    """A box centred at (0.5, 0.4) of size 0.2 x 0.6 spans x in [0.4, 0.6], y in [0.1, 0.7]."""
    assert_close(
        cxcywh_to_xyxy(torch.tensor([0.5, 0.4, 0.2, 0.6])), torch.tensor([0.4, 0.1, 0.6, 0.7])
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_giou_equals_torchvision_on_random_boxes(seed):
    """(N, M) pairwise GIoU is torchvision's, within [-1, 1]."""
    a, b = _random_xyxy(7, seed), _random_xyxy(5, seed + 10)
    giou = generalized_box_iou(a, b)
    assert giou.shape == (7, 5)
    assert_close(giou, ops.generalized_box_iou(a, b))
    assert ((giou >= -1) & (giou <= 1)).all()


def test_giou_of_identical_and_degenerate_boxes():
    """Identical boxes have GIoU 1; zero-width and zero-area boxes against proper boxes are
    finite and equal torchvision's."""
    boxes = _random_xyxy(4, seed=3)
    assert_close(torch.diagonal(generalized_box_iou(boxes, boxes)), torch.ones(4))
    degenerate = torch.tensor([[0.2, 0.2, 0.2, 0.6], [0.3, 0.3, 0.3, 0.3], [0.1, 0.5, 0.9, 0.5]])
    giou = generalized_box_iou(degenerate, boxes)
    assert torch.isfinite(giou).all()
    assert_close(giou, ops.generalized_box_iou(degenerate, boxes))


def test_giou_by_hand():
    """Unit squares one unit apart: IoU 0, union 2, enclosing box 3 -> GIoU = -1/3; a square
    and its left half: IoU 1/2, enclosing = union -> GIoU = 1/2."""
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 0.5, 1.0]])
    assert_close(generalized_box_iou(a, b), torch.tensor([[-1.0 / 3.0, 0.5]]))


def test_batched_giou_equals_torchvision_image_by_image():
    generator = torch.Generator().manual_seed(5)
    first = cxcywh_to_xyxy(torch.rand(3, 7, 4, generator=generator) * 0.5 + 0.1)
    second = cxcywh_to_xyxy(torch.rand(3, 4, 4, generator=generator) * 0.5 + 0.1)
    second[1, 0] = first[1, 2]  # an identical pair: GIoU 1
    batched = batched_generalized_box_iou(first, second)
    assert batched.shape == (3, 7, 4) and batched[1, 2, 0] == pytest.approx(1.0)
    for index in range(3):
        assert_close(batched[index], ops.generalized_box_iou(first[index], second[index]))
