"""Detection transforms keep boxes on the pixels they frame; targets are normalised cxcywh;
batches are padded with a mask on the padding."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from glimpse.batches import DetectionTarget
from glimpse.data.detection.transforms import (
    MIN_BOX_PX,
    DetectionSample,
    RandomSizeCrop,
    collate_detection,
    eval_transform,
    to_target,
    train_transform,
)

MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def _scene(height: int = 48, width: int = 64) -> tuple[tv_tensors.Image, dict]:
    """A black image with two white rectangles, and their boxes (xyxy) labelled 0 and 1."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    rects = [(8, 12, 24, 36), (40, 4, 60, 20)]  # x0, y0, x1, y1
    for x0, y0, x1, y1 in rects:
        image[:, y0:y1, x0:x1] = 255
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor(rects, dtype=torch.float32), format="XYXY", canvas_size=(height, width)
    )
    return tv_tensors.Image(image), {"boxes": boxes, "labels": torch.tensor([0, 1])}


def _white_inside(image: torch.Tensor, box: torch.Tensor) -> bool:
    """Whether ``box`` (xyxy, rounded inwards) covers some pixels, all of them white."""
    x0, y0, x1, y1 = (int(torch.ceil(box[0])), int(torch.ceil(box[1])), int(box[2]), int(box[3]))
    inside = image[0, y0:y1, x0:x1]
    return bool(inside.numel() > 0 and (inside > 0.99).all())


def test_random_size_crop_draws_sides_in_range_and_keeps_boxes_on_their_pixels():
    torch.manual_seed(0)
    crop = v2.Compose([RandomSizeCrop(10, 30), v2.SanitizeBoundingBoxes(min_size=MIN_BOX_PX)])
    seen_boxes = set()
    for _ in range(40):
        image, target = _scene()
        out, out_target = crop(image, target)
        height, width = out.shape[-2:]
        assert 10 <= height <= 30 and 10 <= width <= 30
        boxes, labels = out_target["boxes"], out_target["labels"]
        assert boxes.canvas_size == (height, width) and len(boxes) == len(labels)
        for box in boxes:
            assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
            assert _white_inside(out.float() / 255, box)
        seen_boxes.add(len(boxes))
    assert seen_boxes >= {0, 1}  # some crops miss both rectangles: their boxes are removed


def test_random_size_crop_keeps_a_side_shorter_than_its_minimum_whole():
    image, target = _scene(height=8, width=64)
    out, _ = RandomSizeCrop(10, 30)(image, target)
    assert out.shape[-2] == 8 and 10 <= out.shape[-1] <= 30


def test_train_transform_resizes_to_a_scale_under_the_max_size_with_boxes_inside():
    torch.manual_seed(1)
    transform = train_transform(
        (40, 56), max_size=70, random_crop=0.5, hflip=0.5, mean=MEAN, std=STD
    )
    for _ in range(12):
        image, target = transform(*_scene())
        height, width = image.shape[-2:]
        assert image.dtype == torch.float32 and max(height, width) <= 70
        assert min(height, width) <= 56
        boxes = target["boxes"]
        assert boxes.canvas_size == (height, width)
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert len(boxes) == len(target["labels"])


def test_horizontal_flip_mirrors_pixels_and_box_centres():
    flip = train_transform((48,), max_size=1000, random_crop=0.0, hflip=1.0, mean=MEAN, std=STD)
    plain = eval_transform(48, 1000, MEAN, STD)
    image, target = _scene()
    flipped, flipped_target = flip(image, target)
    original, original_target = plain(*_scene())
    assert torch.equal(flipped, original.flip(-1))
    a = to_target(flipped_target["boxes"], flipped_target["labels"]).boxes
    b = to_target(original_target["boxes"], original_target["labels"]).boxes
    assert torch.allclose(a[:, 0], 1 - b[:, 0]) and torch.allclose(a[:, 1:], b[:, 1:])


def test_eval_transform_resizes_the_shorter_side_unless_the_longer_exceeds_the_max():
    image, target = _scene()
    out, _ = eval_transform(24, 1000, MEAN, STD)(image, target)
    assert out.shape == (3, 24, 32)
    out, out_target = eval_transform(40, 32, MEAN, STD)(image, target)
    assert out.shape == (3, 24, 32) and out_target["boxes"].canvas_size == (24, 32)
    out, _ = eval_transform(64, 64, MEAN, STD)(image, target)
    assert out.shape == (3, 48, 64)


def test_normalisation_uses_mean_and_std():
    image, target = _scene()
    out, _ = eval_transform(48, 1000, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(image, target)
    assert out.max() == pytest.approx(2.0) and out.min() == pytest.approx(-2.0)


def test_to_target_divides_cxcywh_by_the_image_size():
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[8.0, 12.0, 24.0, 36.0]]), format="XYXY", canvas_size=(48, 64)
    )
    target = to_target(boxes, torch.tensor([3]))
    assert torch.allclose(target.boxes, torch.tensor([[16 / 64, 24 / 48, 16 / 64, 24 / 48]]))
    assert target.boxes.dtype == torch.float32 and target.labels.dtype == torch.int64
    empty = to_target(
        tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(4, 4)),
        torch.zeros(0, dtype=torch.int64),
    )
    assert empty.boxes.shape == (0, 4) and empty.labels.shape == (0,)


def test_collate_pads_bottom_right_with_zeros_and_masks_the_padding():
    target = DetectionTarget(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    samples = [
        DetectionSample(torch.ones(3, 4, 6), target, 7, (40, 60)),
        DetectionSample(torch.full((3, 5, 3), 2.0), target, 9, (50, 30)),
    ]
    batch = collate_detection(samples)
    assert batch.images.shape == (2, 3, 5, 6) and batch.mask.shape == (2, 5, 6)
    assert batch.images[0, :, :4, :].eq(1).all() and batch.images[0, :, 4:, :].eq(0).all()
    assert batch.images[1, :, :, :3].eq(2).all() and batch.images[1, :, :, 3:].eq(0).all()
    assert batch.mask[0, :4].logical_not().all() and batch.mask[0, 4:].all()
    assert batch.mask[1, :, :3].logical_not().all() and batch.mask[1, :, 3:].all()
    assert batch.sizes.tolist() == [[4, 6], [5, 3]]
    assert batch.orig_sizes.tolist() == [[40, 60], [50, 30]]
    assert batch.image_ids.tolist() == [7, 9] and batch.image_ids.dtype == torch.int64
    assert batch.targets == (target, target)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"random_crop": 1.5}, "data.random_crop=1.5"),
        ({"scales": ()}, r"data.train_scales=\[\]"),
    ],
)
def test_bad_augmentation_settings_are_refused(kwargs, message):
    settings = {"scales": (32,), "max_size": 64, "random_crop": 0.0, "hflip": 0.5}
    with pytest.raises(ValueError, match=message):
        train_transform(**{**settings, **kwargs}, mean=MEAN, std=STD)
