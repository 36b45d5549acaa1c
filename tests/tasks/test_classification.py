"""The image classifier: loss, top-k metrics over a pass, decay groups, what the spec fills in."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from glimpse.data.images import collate_labelled_images
from glimpse.data.spec import LABELLED_IMAGES, DataSpec
from glimpse.tasks.classification import ImageClassifier, smoothed_targets, soft_cross_entropy
from glimpse.tasks.optim import adamw_with_decay_groups

NUM_CLASSES = 7


def _spec(num_classes: int = NUM_CLASSES, image_size: int = 32) -> dict:
    return DataSpec(
        kind=LABELLED_IMAGES,
        class_names=tuple(f"class{i}" for i in range(num_classes)),
        image_size=image_size,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    ).to_dict()


def _task(num_classes: int = NUM_CLASSES, image_size: int = 32, **net) -> ImageClassifier:
    return ImageClassifier(
        spec=_spec(num_classes, image_size),
        net={"_target_": "glimpse.models.vit.vit_test", **net},
        optimizer={"lr": 1e-3, "weight_decay": 0.05, "betas": [0.9, 0.999]},
        scheduler={"warmup_steps": 2, "min_lr_ratio": 0.1},
        label_smoothing=0.1,
    )


def test_classes_and_image_size_come_from_the_spec():
    task = _task(num_classes=5, image_size=48)
    assert task.net.num_classes == 5 and task.net.img_size == (48, 48)
    assert task(torch.randn(2, 3, 48, 48)).shape == (2, 5)
    assert _task(img_size=16).net.img_size == (16, 16)  # set in the net config: kept
    with pytest.raises(ValueError, match="at least 2 class names"):
        _task(num_classes=1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothed_loss_equals_torch_cross_entropy(smoothing):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, NUM_CLASSES, generator=generator) * 3
    labels = torch.randint(NUM_CLASSES, (16,), generator=generator)
    ours = soft_cross_entropy(logits, smoothed_targets(labels, NUM_CLASSES, smoothing))
    expected = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    torch.testing.assert_close(ours, expected)
    task = _task()
    torch.testing.assert_close(
        task.loss(logits, labels), F.cross_entropy(logits, labels, label_smoothing=0.1)
    )


def _brute_force_topk(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    hits = 0
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        ranked = sorted(range(len(row)), key=lambda c: -row[c])
        hits += label in ranked[:k]
    return hits / len(labels)


class PixelLogits(nn.Module):
    """Reads the logits off the images: ``(B, 3, 1, C) -> images[:, 0, 0] (B, C)``."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, 0, 0]


@pytest.mark.parametrize("num_classes", [NUM_CLASSES, 3])
def test_validation_accuracy_is_top_k_over_every_image_of_the_pass(num_classes):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(13, num_classes, generator=generator)
    labels = torch.randint(num_classes, (13,), generator=generator)
    images = torch.zeros(13, 3, 1, num_classes)
    images[:, 0, 0] = logits
    task = _task(num_classes)
    task.net = PixelLogits()
    # Batches of 8 and 5: a mean of batch means would weigh the 5 more than the 8.
    loader = DataLoader(
        list(zip(images, labels.tolist(), strict=True)),
        batch_size=8,
        collate_fn=collate_labelled_images,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    metrics = trainer.validate(task, dataloaders=loader, verbose=False)[0]
    acc1, acc5 = _brute_force_topk(logits, labels, 1), _brute_force_topk(logits, labels, 5)
    assert 0 < acc1 < acc5 <= 1
    batch_means = (
        _brute_force_topk(logits[:8], labels[:8], 1) + _brute_force_topk(logits[8:], labels[8:], 1)
    ) / 2
    assert batch_means != pytest.approx(acc1)
    assert metrics["val/acc1"] == pytest.approx(acc1)
    assert metrics["val/acc5"] == pytest.approx(acc5)  # top-3 with 3 classes: always 1
    expected_loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert metrics["val/loss"] == pytest.approx(expected_loss.item(), rel=1e-5)


def test_decay_groups_spare_position_table_class_token_norms_and_biases():
    task = _task()
    optimizer = adamw_with_decay_groups(task, lr=1e-3, weight_decay=0.05)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    names = {id(p): name for name, p in task.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    plain_names = {names[id(p)] for p in plain["params"]}
    tokens = {"net.pos_embed", "net.cls_token"}
    vectors = {name for name, p in task.named_parameters() if p.ndim < 2}
    assert plain_names == vectors | tokens
    assert decayed_names == set(names.values()) - vectors - tokens
    assert {"net.blocks.0.norm1.weight", "net.norm.bias", "net.head.bias"} <= plain_names
    assert {"net.patch_embed.proj.weight", "net.blocks.1.attn.qkv.weight"} <= decayed_names
