"""DINO: which views the teacher and the student see, the loss and the centre against a
brute-force loop, the temperature schedule, the frozen last layer, per-parameter clipping, the
paper's settings in model=dino, and training through train.py."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from _helpers_ssl import dino_task, multi_view_loader, ssl_spec, tiny_ssl_overrides, views_batch
from conftest import compose_train
from torch.nn import functional as F

from glimpse.models.vit import vit_test
from glimpse.run import train
from glimpse.tasks.acceleration import build_task
from glimpse.tasks.checkpoints import load_pretrained
from glimpse.tasks.dino import DINO


def _record_inputs(module: torch.nn.Module) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    module.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    return shapes


def test_the_teacher_sees_the_global_views_and_the_student_every_view_by_size():
    task = dino_task()
    teacher = _record_inputs(task.teacher["backbone"])
    student = _record_inputs(task.student["backbone"])
    views, _ = views_batch(batch=3, sizes=(32, 32, 16, 16, 16))
    task.ssl_step(views)
    assert teacher == [(6, 3, 32, 32)]
    assert student == [(6, 3, 32, 32), (9, 3, 16, 16)]


def test_the_loss_is_the_cross_entropy_of_every_other_view_against_the_centred_teacher():
    task = dino_task(student_temp=0.1, center_momentum=0.9)
    with torch.no_grad():
        task.criterion.center.normal_()
    centre = task.criterion.center.clone()
    views, _ = views_batch(batch=3, sizes=(32, 32, 16, 16))
    loss, features = task.ssl_step(views)
    with torch.no_grad():
        teacher = [task.teacher["head"](task.teacher["backbone"](v)) for v in views[:2]]
        student = [task.student["head"](task.student["backbone"](v)) for v in views]
        terms = []
        for i, t in enumerate(teacher):
            target = F.softmax((t - centre) / 0.04, dim=-1)  # epoch 0: tau_t = 0.04
            for v, s in enumerate(student):
                if v != i:
                    terms.append(-(target * F.log_softmax(s / 0.1, dim=-1)).sum(dim=-1).mean())
    assert len(terms) == 2 * 3
    torch.testing.assert_close(loss.detach(), torch.stack(terms).mean(), rtol=1e-4, atol=1e-5)
    mean = torch.cat(teacher).mean(dim=0, keepdim=True)
    torch.testing.assert_close(task.criterion.center, 0.9 * centre + 0.1 * mean)
    torch.testing.assert_close(features, task.teacher["backbone"](views[0]))
    assert "criterion.center" in task.state_dict()


@pytest.mark.parametrize(("epoch", "expected"), [(0, 0.04), (1, 0.055), (2, 0.07), (9, 0.07)])
def test_the_teacher_temperature_warms_up_linearly_over_the_epochs(epoch, expected, monkeypatch):
    task = dino_task(teacher_temp={"start": 0.04, "end": 0.07, "warmup_epochs": 3})
    monkeypatch.setattr(DINO, "current_epoch", property(lambda self: epoch))
    assert task.teacher_temperature() == pytest.approx(expected)


class RecordHead(L.Callback):
    """The last layer's and the first MLP layer's weights after every training batch."""

    def __init__(self) -> None:
        self.weights: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        head = pl_module.student["head"]
        last = head.last_layer.parametrizations.weight.original1.detach().clone()
        self.weights.append((last, head.mlp[0].weight.detach().clone()))


def test_the_last_layer_is_frozen_during_the_first_epoch_only():
    task = dino_task(freeze_last_layer=1)
    start = task.student["head"].last_layer.parametrizations.weight.original1.detach().clone()
    first = task.student["head"].mlp[0].weight.detach().clone()
    recorder = RecordHead()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(task, train_dataloaders=multi_view_loader(num_images=4, sizes=(32, 32, 16)))
    (last_0, mlp_0), (last_1, mlp_1) = recorder.weights
    assert torch.equal(last_0, start) and not torch.equal(mlp_0, first)
    assert not torch.equal(last_1, last_0) and not torch.equal(mlp_1, mlp_0)
    magnitude = task.student["head"].last_layer.parametrizations.weight.original0
    assert torch.equal(magnitude, torch.ones_like(magnitude))  # norm_last_layer


def test_each_parameters_gradient_is_clipped_on_its_own():
    task = dino_task()
    optimizer = torch.optim.AdamW(task.student.parameters(), lr=1e-3)
    params = [p for p in task.student.parameters() if p.requires_grad]
    for index, p in enumerate(params):
        p.grad = torch.full_like(p, 10.0 if index % 2 else 1e-4)
    small = [p.grad.clone() for p in params[::2]]
    task.configure_gradient_clipping(
        optimizer, gradient_clip_val=3.0, gradient_clip_algorithm="norm"
    )
    for p in params[1::2]:
        assert p.grad.norm() == pytest.approx(3.0, rel=1e-4)
    for p, before in zip(params[::2], small, strict=True):
        assert torch.equal(p.grad, before)


def test_model_dino_has_the_papers_vit_s_settings(tmp_path):
    cfg = compose_train(["model=dino", "data=ssl_imagenette"], tmp_path)
    model = cfg.model
    assert model._target_ == "glimpse.tasks.dino.DINO"
    assert model.backbone._target_ == "glimpse.models.vit.vit_small_patch16"
    assert model.backbone.drop_path_rate == 0.1
    optimizer = model.optimizer
    assert (optimizer.name, optimizer.lr, optimizer.lr_batch_size) == ("adamw", 5e-4, 256)
    assert (optimizer.weight_decay, optimizer.weight_decay_end) == (0.04, 0.4)
    assert (model.head.out_dim, model.head.hidden_dim, model.head.bottleneck_dim) == (
        65536,
        2048,
        256,
    )
    assert model.head.norm_last_layer
    assert dict(model.teacher_temp) == {"start": 0.04, "end": 0.07, "warmup_epochs": 30}
    assert (model.student_temp, model.center_momentum, model.freeze_last_layer) == (0.1, 0.9, 1)
    assert model.teacher_momentum == 0.996 and cfg.trainer.gradient_clip_val == 3.0
    assert cfg.data.views.kind == "multicrop"
    assert (cfg.optimized_metric, cfg.optimized_mode) == ("val/knn_acc1", "max")
    small = {**model, "head": {**model.head, "out_dim": 64, "hidden_dim": 32}}
    small["backbone"] = {"_target_": "glimpse.models.vit.vit_test"}
    task = build_task(small, ssl_spec())
    assert isinstance(task, DINO) and task.criterion.out_dim == 64


def test_fast_dev_run_of_dino_on_multi_view_shapes_draws_attention_maps(tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_train([*tiny_ssl_overrides(tmp_path, "dino"), "debug=fdr"], run_dir)
    value = train(cfg)
    assert value is not None and 0.0 <= value <= 1.0
    assert [p.name for p in (run_dir / "figures").iterdir()] == ["attention_maps_step0000001.png"]


def test_the_imagenette_recipe_trains_vit_s16_at_the_papers_crop_sizes(tmp_path):
    cfg = compose_train(["experiment=imagenette_dino"], tmp_path)
    assert (cfg.data.base.variant, cfg.data.base.image_size) == ("320", 224)
    assert (cfg.data.views.kind, cfg.data.views.local_size, cfg.data.batch_size) == (
        "multicrop",
        96,
        256,
    )
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    assert cfg.trainer.max_steps == 300 * 36 and cfg.model.scheduler.warmup_steps == 10 * 36
    assert cfg.model.backbone._target_ == "glimpse.models.vit.vit_small_patch16"
    task = build_task(cfg.model, ssl_spec(image_size=224)).eval()
    with torch.no_grad():
        assert task.image_features(torch.randn(1, 3, 224, 224)).shape == (1, 384)
        assert task.student["head"](torch.randn(2, 384)).shape == (2, 65536)


def test_the_teachers_backbone_is_evaluated_and_exported_to_a_vit_of_another_size(tmp_path):
    task = dino_task()
    with torch.no_grad():
        task.teacher["backbone"].cls_token.add_(1.0)  # teacher and student differ
    images = torch.randn(2, 3, 32, 32)
    task.eval()
    with torch.no_grad():
        torch.testing.assert_close(task.image_features(images), task.teacher["backbone"](images))
    config, state = task.exported_backbone()
    assert config == {"_target_": "glimpse.models.vit.vit_test", "img_size": 32}
    assert torch.equal(state["cls_token"], task.teacher["backbone"].cls_token)
    path = tmp_path / "dino.ckpt"
    torch.save(
        {
            "hyper_parameters": dict(task.hparams),
            "state_dict": task.state_dict(),
            "glimpse": {"task": "glimpse.tasks.dino.DINO", "config": None, "code_version": "x"},
        },
        path,
    )
    classifier = vit_test(img_size=48, num_classes=5)
    load_pretrained(classifier, {"_target_": "glimpse.models.vit.vit_test"}, str(path))
    assert torch.equal(classifier.cls_token, state["cls_token"])
    assert classifier.pos_embed.shape == (1, 1 + 12 * 12, 32)  # resized from 8x8 to 12x12
    assert classifier.head.out_features == 5
