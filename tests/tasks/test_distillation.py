"""DeiT's distillation task: the losses by brute force, the frozen teacher kept out of the
task's state, class mappings and the errors for teachers of other classes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import random_images
from torch import nn
from torch.testing import assert_close

from glimpse.batches import LABELLED_IMAGES
from glimpse.data.spec import DataSpec
from glimpse.models.deit import DistilledVisionTransformer
from glimpse.tasks.classification import ImageClassifier, batch_mixing
from glimpse.tasks.distillation import DistillationClassifier, FrozenTeacher

NUM_CLASSES = 5
OPTIMIZER = {"lr": 1e-3, "weight_decay": 0.05, "betas": [0.9, 0.999]}
SCHEDULER = {"warmup_steps": 2, "min_lr_ratio": 0.1}
RANDOM_RESNET = {"kind": "torchvision", "name": "resnet18", "weights": None}


def _spec(class_names=None, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)) -> dict:
    names = class_names or tuple(f"class{i}" for i in range(NUM_CLASSES))
    return DataSpec(
        kind=LABELLED_IMAGES, class_names=tuple(names), image_size=32, mean=mean, std=std
    ).to_dict()


def _task(teacher=RANDOM_RESNET, spec=None, net="glimpse.models.deit.deit_test", **kwargs):
    return DistillationClassifier(
        spec=spec or _spec(),
        net={"_target_": net},
        optimizer=OPTIMIZER,
        scheduler=SCHEDULER,
        teacher=teacher,
        **kwargs,
    )


class RecordingTeacher(nn.Module):
    """A fixed linear classifier of the mean pixel, remembering the images it was given."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.linear = nn.Linear(3, num_classes)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(num_classes, 3) * 5)
        self.seen: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(images)
        return self.linear(images.mean(dim=(2, 3)))


def _with_known_teacher(task: DistillationClassifier) -> RecordingTeacher:
    known = RecordingTeacher()
    task._set_teacher(FrozenTeacher(known))
    return known


def _brute_force(class_logits, dist_logits, targets, teacher_logits, mode, alpha, tau):
    """Sample by sample, with Python sums: smoothed CE plus the teacher's term."""
    total = 0.0
    for zc, zd, t, zt in zip(class_logits, dist_logits, targets, teacher_logits, strict=True):
        log_pc = zc - torch.logsumexp(zc, 0)
        class_term = -sum(float(t[c] * log_pc[c]) for c in range(NUM_CLASSES))
        if mode == "hard":
            y_t = max(range(NUM_CLASSES), key=lambda c: float(zt[c]))
            dist_term = -float(zd[y_t] - torch.logsumexp(zd, 0))
        else:
            log_ps = zd / tau - torch.logsumexp(zd / tau, 0)
            log_pt = zt / tau - torch.logsumexp(zt / tau, 0)
            kl = sum(float(log_pt[c].exp() * (log_pt[c] - log_ps[c])) for c in range(NUM_CLASSES))
            dist_term = tau**2 * kl
        total += (1 - alpha) * class_term + alpha * dist_term
    return total / len(targets)


def _smoothed(labels: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, NUM_CLASSES) * (1 - smoothing) + (
        smoothing / NUM_CLASSES
    )


@pytest.mark.parametrize(
    ("mode", "alpha", "tau"), [("hard", 0.5, 1.0), ("soft", 0.1, 3.0), ("soft", 0.5, 1.0)]
)
def test_loss_equals_brute_force_with_a_known_teacher(mode, alpha, tau):
    torch.manual_seed(0)
    task = _task(distillation=mode, alpha=alpha, tau=tau).train()
    known = _with_known_teacher(task)
    images = random_images(32, 32, batch=6)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    loss, logits = task.training_loss(images, labels)
    with torch.no_grad():
        class_logits, dist_logits = task.net(images)
        teacher_logits = known.linear(images.mean(dim=(2, 3)))
    expected = _brute_force(
        class_logits, dist_logits, _smoothed(labels), teacher_logits, mode, alpha, tau
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert_close(logits, (class_logits + dist_logits) / 2)
    assert not teacher_logits.requires_grad
    loss.backward()
    assert task.net.head.weight.grad.abs().sum() > 0
    assert task.net.head_dist.weight.grad.abs().sum() > 0


def test_hard_distillation_trains_the_distillation_head_on_the_teacher_only():
    """Teacher's argmax against the labels: the two heads get different targets."""
    torch.manual_seed(0)
    task = _task(distillation="hard").train()
    _with_known_teacher(task)
    images = random_images(32, 32, batch=4)
    _, dist_logits = task.net(images)
    loss, _ = task.training_loss(images, torch.zeros(4, dtype=torch.long))
    task.net.zero_grad()
    loss.backward()
    head_dist_grad = task.net.head_dist.weight.grad.clone()
    # Same teacher, different labels: the distillation head's gradient does not change.
    task.net.zero_grad()
    task.training_loss(images, torch.full((4,), 3))[0].backward()
    assert_close(task.net.head_dist.weight.grad, head_dist_grad)
    assert dist_logits.shape == (4, NUM_CLASSES)


def test_mixed_targets_and_mixed_images_reach_both_terms():
    torch.manual_seed(0)
    task = _task(distillation="hard", mixup_alpha=0.8, cutmix_alpha=1.0).train()
    known = _with_known_teacher(task)
    images = random_images(32, 32, batch=6)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    mixing = batch_mixing(NUM_CLASSES, 0.8, 1.0, 0.5)
    mixed, targets = mixing(images, labels)
    assert targets.shape == (6, NUM_CLASSES) and not torch.equal(mixed, images)
    loss, _ = task.training_loss(mixed, targets)
    assert torch.equal(known.seen[-1], mixed)  # the teacher labels the mixed images
    with torch.no_grad():
        class_logits, dist_logits = task.net(mixed)
        teacher_logits = known.linear(mixed.mean(dim=(2, 3)))
    smoothed = targets * 0.9 + 0.1 / NUM_CLASSES
    expected = _brute_force(class_logits, dist_logits, smoothed, teacher_logits, "hard", 0.5, 1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_no_distillation_with_a_plain_vit_is_the_classifier_loss():
    torch.manual_seed(0)
    task = _task(teacher=None, distillation="none", net="glimpse.models.vit.vit_test")
    assert task.teacher is None
    images, labels = random_images(32, 32, batch=4), torch.tensor([0, 1, 2, 3])
    loss, logits = task.training_loss(images, labels)
    assert_close(loss, task.loss(logits, labels))


def test_teacher_is_frozen_unsaved_unoptimized_and_shared_by_copies():
    task = _task()
    task.setup("fit")
    teacher = task.teacher
    assert isinstance(teacher, FrozenTeacher)
    assert all(not p.requires_grad for p in teacher.parameters())
    task.train()
    assert task.training and not teacher.training
    assert not any(m.training for m in teacher.modules())
    teacher.train()
    assert not teacher.training
    assert not any(name.startswith("_teacher") for name, _ in task.named_modules())
    assert set(task.state_dict()) == {f"net.{key}" for key in task.net.state_dict()}
    groups = task.parameter_groups(task.optimizer_settings)
    optimized = {id(p) for group in groups for p in group["params"]}
    assert optimized == {id(p) for p in task.net.parameters()}
    assert not optimized & {id(p) for p in teacher.parameters()}
    logits = task.teacher_logits(random_images(32, 32))
    assert logits.shape == (2, NUM_CLASSES) and not logits.requires_grad
    assert copy.deepcopy(task).teacher is teacher


def test_rebuilt_from_hyperparameters_and_state_without_the_teacher(tmp_path: Path):
    missing = {"kind": "checkpoint", "path": str(tmp_path / "gone.ckpt")}
    task = _task(teacher=missing)
    rebuilt = DistillationClassifier(**task.hparams)
    rebuilt.load_state_dict(task.state_dict())
    assert rebuilt._teacher is None
    images = random_images(32, 32)
    with torch.no_grad():
        assert_close(rebuilt.eval()(images), task.eval()(images))
    with pytest.raises(FileNotFoundError, match="gone.ckpt"):
        rebuilt.setup("fit")


def test_class_indices_select_the_teachers_columns():
    indices = [999, 0, 217, 5, 42]
    task = _task(teacher={**RANDOM_RESNET, "class_indices": indices})
    images = random_images(32, 32)
    logits = task.teacher_logits(images)
    with torch.no_grad():
        full = task.teacher.model(images)
    assert full.shape == (2, 1000)
    assert_close(logits, full[:, indices])


def test_imagenet_teacher_on_other_classes_is_refused_naming_the_indices():
    """Read from the weights' metadata: refused before anything is downloaded."""
    pretrained = {"kind": "torchvision", "name": "resnet18", "weights": "DEFAULT"}
    expected = r"predicts 1000 classes but the data has 5 whose folders are not ImageNet wnids"
    with pytest.raises(ValueError, match=expected):
        _task(teacher=pretrained).setup("fit")
    with pytest.raises(ValueError, match=r"weights='V9' is not a weight of torchvision's resnet18"):
        _task(teacher={**pretrained, "weights": "V9"}).setup("fit")
    names = ("tench", "English springer", "cassette player", "chain saw", "church")
    with pytest.raises(ValueError, match=r"\(by name: \[0,217,482,491,497\]\), or use a glimpse"):
        _task(teacher=pretrained, spec=_spec(names)).setup("fit")
    with pytest.raises(
        ValueError, match=r"model.teacher.kind=checkpoint .*model.distillation=none"
    ):
        _task(teacher=pretrained).setup("fit")


def test_an_imagenet_teacher_on_wnid_class_folders_takes_their_imagenet_indices(monkeypatch):
    """Imagenette's wnid folders are ImageNet-1k classes 0, 217, 482, ...: no class_indices."""
    import torchvision

    fetched = []

    def cached_weights(weights, without):
        fetched.append(str(weights))
        return torchvision.models.resnet18().state_dict()

    monkeypatch.setattr("glimpse.tasks.distillation.torchvision_weights_state", cached_weights)
    wnids = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079"]
    spec = DataSpec.from_dict(_spec(wnids))
    spec = DataSpec.from_dict({**spec.to_dict(), "metadata": {"class_folders": wnids}})
    pretrained = {"kind": "torchvision", "name": "resnet18", "weights": "DEFAULT"}
    task = _task(teacher=pretrained, spec=spec.to_dict())
    task.setup("fit")
    assert fetched == ["ResNet18_Weights.IMAGENET1K_V1"]
    assert task.teacher.class_indices.tolist() == [0, 217, 482, 491, 497]
    assert task.teacher_logits(random_images(32, 32)).shape == (2, 5)


@pytest.mark.parametrize(
    ("teacher", "message"),
    [
        (None, "needs model.teacher"),
        ({"kind": "timm", "name": "x"}, "kind='timm' must be one of"),
        ({**RANDOM_RESNET, "weight": None}, r"unknown keys \['weight'\]"),
        ({**RANDOM_RESNET, "class_indices": [0, 1]}, "has 2 entries but the data has 5"),
    ],
)
def test_bad_teacher_configs_are_refused(teacher, message):
    with pytest.raises(ValueError, match=message):
        _task(teacher=teacher)


def test_out_of_range_class_indices_are_refused():
    teacher = {**RANDOM_RESNET, "class_indices": [0, 1, 2, 3, 1000]}
    with pytest.raises(ValueError, match="indices of the teacher's 1000 outputs"):
        _task(teacher=teacher).setup("fit")


def _save_classifier(path: Path, class_names, mean=(0.5, 0.5, 0.5)) -> ImageClassifier:
    """A glimpse checkpoint as train.py writes it, for load_task."""
    torch.manual_seed(1)
    classifier = ImageClassifier(
        spec=_spec(class_names, mean=mean),
        net={"_target_": "glimpse.models.vit.vit_test"},
        optimizer=OPTIMIZER,
        scheduler=SCHEDULER,
    )
    meta = {"task": "glimpse.tasks.classification.ImageClassifier", "config": None}
    torch.save(
        {
            "glimpse": {**meta, "code_version": "test"},
            "hyper_parameters": dict(classifier.hparams),
            "state_dict": classifier.state_dict(),
        },
        path,
    )
    return classifier.eval()


def test_checkpoint_teacher_gives_its_classifiers_logits(tmp_path: Path):
    path = tmp_path / "teacher.ckpt"
    classifier = _save_classifier(path, None)
    task = _task(teacher={"kind": "checkpoint", "path": str(path)})
    images = random_images(32, 32)
    with torch.no_grad():
        assert_close(task.teacher_logits(images), classifier(images))


def test_checkpoint_teacher_of_other_classes_is_refused_unless_mapped(tmp_path: Path):
    path = tmp_path / "teacher.ckpt"
    classifier = _save_classifier(path, ("a", "b", "c", "d", "e", "f"))
    with pytest.raises(ValueError, match=r"teacher\.ckpt was trained on 6 classes"):
        _task(teacher={"kind": "checkpoint", "path": str(path)}).setup("fit")
    mapped = {"kind": "checkpoint", "path": str(path), "class_indices": [5, 4, 3, 2, 1]}
    task = _task(teacher=mapped)
    images = random_images(32, 32)
    with torch.no_grad():
        assert_close(task.teacher_logits(images), classifier(images)[:, [5, 4, 3, 2, 1]])


def test_teacher_sees_images_renormalised_to_its_own_statistics(tmp_path: Path):
    """Data normalised with (0.5, 0.25); a teacher trained with ImageNet's statistics."""
    known = RecordingTeacher()
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    teacher = FrozenTeacher(known, None, ([0.5] * 3, [0.25] * 3), imagenet)
    images = random_images(8, 8)
    teacher(images)
    pixels = images * 0.25 + 0.5
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in imagenet)
    assert_close(known.seen[-1], (pixels - mean) / std)
    same = FrozenTeacher(known, None, imagenet, imagenet)
    same(images)
    assert known.seen[-1] is images
    path = tmp_path / "teacher.ckpt"
    _save_classifier(path, None, mean=(0.4, 0.4, 0.4))
    task = _task(teacher={"kind": "checkpoint", "path": str(path)})
    assert_close(task.teacher.shift.flatten(), torch.full((3,), 0.1 / 0.25))


def test_student_is_a_distilled_vit_and_the_config_defaults_are_the_papers():
    task = _task()
    assert isinstance(task.net, DistilledVisionTransformer)
    assert task.hparams["distillation"] == "hard" and task.hparams["alpha"] == 0.5
    assert "net.dist_token" in {f"net.{n}" for n in task.net.no_weight_decay()}
