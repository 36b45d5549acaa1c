"""The image classifier: loss, top-k metrics over a pass, decay groups, what the spec fills in."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from glimpse.batches import LABELLED_IMAGES
from glimpse.data.images.image_folder import collate_labelled_images
from glimpse.data.spec import DataSpec
from glimpse.optim.param_groups import decay_groups
from glimpse.tasks.classification import ImageClassifier, smoothed_targets, soft_cross_entropy

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
    decayed, plain = task.parameter_groups(task.optimizer_settings)
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


def test_swin_bias_tables_are_not_decayed():
    task = _task(_target_="glimpse.models.swin.swin_test")
    _, plain = decay_groups(task, weight_decay=0.05)
    names = {id(p): name for name, p in task.named_parameters()}
    tables = {n for n in names.values() if n.endswith("relative_position_bias_table")}
    assert tables and tables <= {names[id(p)] for p in plain["params"]}


def _labelled_loader(num_images: int = 24, num_classes: int = NUM_CLASSES, batch_size: int = 8):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(num_images, 3, 32, 32, generator=generator)
    labels = torch.randint(num_classes, (num_images,), generator=generator)
    return DataLoader(
        list(zip(images, labels.tolist(), strict=True)),
        batch_size=batch_size,
        collate_fn=collate_labelled_images,
    )


def _quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixed_batches_train_on_smoothed_distributions(mixup, cutmix):
    task = ImageClassifier(
        spec=_spec(),
        net={"_target_": "glimpse.models.vit.vit_test"},
        optimizer={"lr": 1e-3, "weight_decay": 0.05},
        scheduler={"warmup_steps": 2, "min_lr_ratio": 0.1},
        label_smoothing=0.2,
        mixup_alpha=mixup,
        cutmix_alpha=cutmix,
    )
    torch.manual_seed(0)
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5])
    mixed, targets = task.mixing(images, labels)
    assert targets.shape == (6, NUM_CLASSES)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(6))
    # Each image is mixed with one other (torchvision pairs image i with image i - 1).
    assert ((targets > 0).sum(dim=1) <= 2).all() and not torch.equal(mixed, images)
    logits = task(mixed)
    smoothed = targets * 0.8 + 0.2 / NUM_CLASSES
    expected = -(smoothed * torch.log_softmax(logits, dim=-1)).sum(dim=1).mean()
    torch.testing.assert_close(task.loss(logits, targets), expected)


def test_mixing_is_off_by_default_and_bad_values_are_refused():
    assert _task().mixing is None
    with pytest.raises(ValueError, match="mixup_alpha=-1"):
        ImageClassifier(
            spec=_spec(),
            net={"_target_": "glimpse.models.vit.vit_test"},
            optimizer={"lr": 1e-3, "weight_decay": 0.05},
            scheduler={"warmup_steps": 2, "min_lr_ratio": 0.1},
            mixup_alpha=-1,
        )


class RecordWeights(L.Callback):
    """Keeps a copy of the head's weight after every optimizer step."""

    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights.append(pl_module.net.head.weight.detach().clone())


def test_ema_of_the_weights_is_what_training_leaves_and_checkpoints(tmp_path):
    decay = 0.6
    task = ImageClassifier(
        spec=_spec(),
        net={"_target_": "glimpse.models.vit.vit_test"},
        optimizer={"lr": 1e-2, "weight_decay": 0.05},
        scheduler={"warmup_steps": 1, "min_lr_ratio": 1.0},
        ema_decay=decay,
        figures=None,
    )
    recorder = RecordWeights()
    trainer = _quiet_trainer(
        max_steps=3, callbacks=[recorder], default_root_dir=tmp_path, limit_val_batches=0
    )
    trainer.fit(task, train_dataloaders=_labelled_loader())
    # AveragedModel starts from the first step's weights, then ema <- d ema + (1 - d) w.
    expected = recorder.weights[0]
    for weights in recorder.weights[1:]:
        expected = decay * expected + (1 - decay) * weights
    assert len(recorder.weights) == 3
    assert not torch.allclose(expected, recorder.weights[-1])
    torch.testing.assert_close(task.net.head.weight, expected)
    checkpoint = torch.load(
        next((tmp_path / "checkpoints").glob("*.ckpt")), weights_only=True, map_location="cpu"
    )
    torch.testing.assert_close(checkpoint["state_dict"]["net.head.weight"], expected)
    torch.testing.assert_close(
        checkpoint["current_model_state"]["net.head.weight"], recorder.weights[-1]
    )


def test_channels_last_computes_the_same_logits():
    torch.manual_seed(0)
    task = ImageClassifier(
        spec=_spec(),
        net={"_target_": "torchvision.models.resnet18"},
        optimizer={"lr": 1e-3, "weight_decay": 0.05},
        scheduler={"warmup_steps": 2, "min_lr_ratio": 0.1},
        image_size_arg=None,
        channels_last=True,
    ).eval()
    assert task.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 32, 32)
    reference = task.net.to(memory_format=torch.contiguous_format)(images)
    task.net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(task(images), reference, atol=1e-5, rtol=1e-5)


def test_validation_draws_the_confusion_matrix_and_the_attention_rollout(tmp_path):
    from glimpse.callbacks.classification_figures import ClassificationFigures

    task = _task()
    loader = _labelled_loader(num_images=20)
    figures = ClassificationFigures(str(tmp_path), num_images=3)
    _quiet_trainer(callbacks=[figures]).validate(task, dataloaders=loader, verbose=False)
    names = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert names == ["attention_rollout_step0000000.png", "confusion_matrix_step0000000.png"]
    task.eval()
    with torch.no_grad():
        predictions = torch.cat([task(batch.images).argmax(1) for batch in loader])
    labels = torch.cat([batch.labels for batch in loader])
    expected = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for label, prediction in zip(labels.tolist(), predictions.tolist(), strict=True):
        expected[label, prediction] += 1
    assert torch.equal(task.val_confusion.compute(), expected)
    images, labels = figures.samples
    assert images.shape == (3, 3, 32, 32) and len(set(labels.tolist())) == 3


def test_rollout_images_cover_the_classes_of_a_sorted_validation_set(tmp_path):
    from glimpse.callbacks.classification_figures import ClassificationFigures

    task = _task(num_classes=3)
    labels = torch.tensor([0] * 8 + [1] * 8 + [2] * 8)  # sorted, as ImageFolder lists them
    images = torch.randn(24, 3, 32, 32)
    loader = DataLoader(
        list(zip(images, labels.tolist(), strict=True)),
        batch_size=8,
        collate_fn=collate_labelled_images,
    )
    figures = ClassificationFigures(str(tmp_path), num_images=5)
    _quiet_trainer(callbacks=[figures]).validate(task, dataloaders=loader, verbose=False)
    picked_images, picked_labels = figures.samples
    # One per class first (images 0, 8, 16), then the first batch's next ones (1, 2).
    assert picked_labels.tolist() == [0, 1, 2, 0, 0]
    torch.testing.assert_close(picked_images, images[[0, 8, 16, 1, 2]])
    # Fewer images than asked for in all: every one, each once.
    few = ClassificationFigures(str(tmp_path), num_images=30)
    _quiet_trainer(callbacks=[few]).validate(task, dataloaders=loader, verbose=False)
    expected_order = [0, 8, 16, *range(1, 8)]  # one per class, then the rest of batch 0
    torch.testing.assert_close(few.samples[0], images[expected_order])
