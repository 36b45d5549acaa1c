"""The momentum-teacher base of BYOL and DINO: the EMA teacher, its schedule, the optimizer
groups and learning-rate scaling, the weight-decay schedule, and the kNN and probe monitors."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
from _helpers_ssl import byol_task, dino_task, labelled_loader, multi_view_loader, views_batch
from torch.nn import functional as F

from glimpse.batches import LABELLED_IMAGES
from glimpse.data.spec import DataSpec
from glimpse.metrics.knn import knn_accuracy


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_the_teacher_starts_as_a_copy_and_no_gradient_reaches_it_or_the_probe():
    task = byol_task()
    for (name, s), (_, t) in zip(
        task.student.named_parameters(), task.teacher.named_parameters(), strict=True
    ):
        assert torch.equal(s, t) and not t.requires_grad, name
    views, labels = views_batch()
    loss, features = task.ssl_step(views)
    loss.backward()
    assert all(p.grad is None for p in task.teacher.parameters())
    assert all(p.grad is None for p in task.probe.parameters())
    assert all(p.grad is not None for p in task.student.parameters())
    assert not features.requires_grad
    task.zero_grad(set_to_none=True)
    F.cross_entropy(task.probe(features), labels).backward()
    assert task.probe.weight.grad is not None
    assert all(p.grad is None for p in task.student.parameters())


class RecordEMA(L.Callback):
    """Keeps (teacher before, student after, teacher after) of every training step."""

    def __init__(self) -> None:
        self.steps: list[tuple[dict, dict, dict]] = []
        self._before: dict = {}

    @staticmethod
    def _state(module: torch.nn.Module) -> dict:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._before = self._state(pl_module.teacher)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        after = (self._state(pl_module.student), self._state(pl_module.teacher))
        self.steps.append((self._before, *after))


def test_every_optimizer_step_moves_the_teacher_by_the_ema_of_the_cosine_momentum():
    task = byol_task(teacher_momentum=0.9)
    recorder = RecordEMA()
    _trainer(max_steps=3, limit_val_batches=0, callbacks=[recorder]).fit(
        task, train_dataloaders=multi_view_loader(num_images=12)
    )
    # tau_k = 1 - (1 - 0.9) (cos(pi k / 3) + 1) / 2 for k = 0, 1, 2.
    taus = [0.9, 0.925, 0.975]
    assert len(recorder.steps) == 3
    for tau, (before, student, teacher) in zip(taus, recorder.steps, strict=True):
        parameters = dict(task.teacher.named_parameters())
        for key, value in teacher.items():
            if key in parameters:
                expected = tau * before[key] + (1 - tau) * student[key]
                torch.testing.assert_close(value, expected)
            else:  # BatchNorm statistics are copied
                assert torch.equal(value, student[key]), key
        weight = "backbone.conv1.weight"
        assert not torch.equal(teacher[weight], student[weight])
    assert all(p.grad is None for p in task.teacher.parameters())


def test_the_momentum_runs_from_tau_base_to_one_over_the_steps():
    task = byol_task()
    task.total_steps = 100
    assert task.teacher_momentum(0) == pytest.approx(0.996)
    assert task.teacher_momentum(50) == pytest.approx(0.998)
    assert task.teacher_momentum(100) == pytest.approx(1.0)


def test_the_teacher_has_no_stochastic_depth():
    task = dino_task(backbone={"_target_": "glimpse.models.vit.vit_test", "drop_path_rate": 0.2})
    student = [m.drop_prob for m in task.student.modules() if hasattr(m, "drop_prob")]
    teacher = [m.drop_prob for m in task.teacher.modules() if hasattr(m, "drop_prob")]
    assert max(student) == pytest.approx(0.2) and teacher == [0.0] * len(student)


def test_lars_groups_and_the_learning_rate_scaled_with_the_batch():
    task = byol_task(
        optimizer={
            "name": "lars",
            "lr": 0.2,
            "lr_batch_size": 256,
            "weight_decay": 1.5e-6,
            "momentum": 0.9,
            "trust_coefficient": 1e-3,
        },
        probe={"lr": 0.05, "weight_decay": 0.0},
    )
    trainer = _trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(task, train_dataloaders=multi_view_loader(batch_size=4))
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    assert type(trainer.optimizers[0]).__name__ == "LARS"
    assert groups["decay"]["initial_lr"] == pytest.approx(0.2 * 4 / 256)
    assert groups["probe"]["initial_lr"] == pytest.approx(0.05)
    adapted = {name: g["lars_adaptation"] for name, g in groups.items()}
    assert adapted == {"decay": True, "no_decay": False, "probe": False}
    assert groups["decay"]["weight_decay"] == 1.5e-6 and groups["no_decay"]["weight_decay"] == 0
    names = {id(p): n for n, p in task.named_parameters()}
    decayed = {names[id(p)] for p in groups["decay"]["params"]}
    plain = {names[id(p)] for p in groups["no_decay"]["params"]}
    assert "student.backbone.conv1.weight" in decayed and "predictor.net.0.weight" in decayed
    assert {"student.backbone.bn1.weight", "student.head.net.0.bias"} <= plain
    assert {names[id(p)] for p in groups["probe"]["params"]} == {"probe.weight", "probe.bias"}
    assert not any(name.startswith("teacher.") for name in decayed | plain)


class RecordDecay(L.Callback):
    def __init__(self) -> None:
        self.decays: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        group = next(g for g in optimizer.param_groups if g["name"] == "decay")
        self.decays.append(group["weight_decay"])


def test_the_weight_decay_follows_a_cosine_to_its_end_value():
    task = dino_task(
        optimizer={"lr": 1e-3, "lr_batch_size": None, "weight_decay": 0.04, "weight_decay_end": 0.4}
    )
    recorder = RecordDecay()
    _trainer(max_steps=3, limit_val_batches=0, callbacks=[recorder]).fit(
        task, train_dataloaders=multi_view_loader(num_images=12, sizes=(32, 32, 16))
    )
    expected = [0.4 - 0.36 * (1 + math.cos(math.pi * k / 3)) / 2 for k in range(3)]
    assert recorder.decays == pytest.approx(expected)
    assert recorder.decays[0] == pytest.approx(0.04)


def test_validation_logs_knn_and_probe_accuracy_and_the_feature_spread():
    task = byol_task()
    generator = torch.Generator().manual_seed(3)
    bank_images, query_images = torch.randn(12, 3, 32, 32, generator=generator), None
    query_images = bank_images[:6] + 0.1 * torch.randn(6, 3, 32, 32, generator=generator)
    bank_labels = torch.arange(12) % 3
    query_labels = torch.tensor([0, 1, 2, 2, 1, 0])
    metrics = _trainer().validate(
        task,
        dataloaders=[
            labelled_loader(bank_images, bank_labels),
            labelled_loader(query_images, query_labels),
        ],
        verbose=False,
    )[0]
    task.eval()
    with torch.no_grad():
        bank, query = task.image_features(bank_images), task.image_features(query_images)
        probe = (task.probe(query).argmax(dim=1) == query_labels).float().mean()
    expected = knn_accuracy(query, query_labels, bank, bank_labels, 3, k=20, temperature=0.07)
    assert metrics["val/knn_acc1"] == pytest.approx(expected["acc1"])
    assert metrics["val/knn_acc5"] == pytest.approx(1.0)  # 3 classes
    assert metrics["val/probe_acc1"] == pytest.approx(probe.item())
    spread = F.normalize(query, dim=1).std(dim=0, correction=0).mean()
    spread = spread * query.shape[1] ** 0.5
    assert metrics["val/feature_std"] == pytest.approx(spread.item(), rel=1e-5)


def test_unknown_settings_and_data_without_classes_are_refused():
    with pytest.raises(ValueError, match="unknown key"):
        byol_task(optimizer={"name": "adamw", "lr": 1e-3, "weight_decay": 0.0, "beta": 0.9})
    with pytest.raises(ValueError, match="must be one of adamw, lars"):
        byol_task(optimizer={"name": "sgd", "lr": 1e-3, "weight_decay": 0.0})
    spec = DataSpec(kind=LABELLED_IMAGES, image_size=32).to_dict()
    with pytest.raises(ValueError, match="at least 2 class names"):
        byol_task(spec=spec)


def test_a_copy_of_the_task_keeps_its_teacher_apart():
    task = byol_task()
    clone = copy.deepcopy(task)
    with torch.no_grad():
        clone.teacher["backbone"].conv1.weight.add_(1.0)
    assert not torch.equal(
        clone.teacher["backbone"].conv1.weight, task.teacher["backbone"].conv1.weight
    )
