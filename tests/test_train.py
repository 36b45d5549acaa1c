"""End-to-end training through glimpse.run.train, with configs composed as train.py would."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import (
    compose_train,
    short_run,
    small_model_overrides,
    tiny_image_overrides,
    tiny_overrides,
)

from glimpse.data.synthetic.shapes import KINDS
from glimpse.models.vit import VisionTransformer
from glimpse.run import train
from glimpse.tasks.checkpoints import load_task

MODELS = ["rnn", "lstm", "gru", "transformer"]


@pytest.mark.parametrize("model", MODELS)
def test_fast_dev_run_trains_validates_and_tests_each_model(model, corpus, tmp_path):
    overrides = tiny_overrides(corpus, tmp_path) + small_model_overrides(model)
    cfg = compose_train([f"model={model}", "debug=fdr", *overrides], tmp_path / "run")
    assert train(cfg) is not None


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_fast_dev_run_with_scratch_cells(cell, corpus, tmp_path):
    overrides = tiny_overrides(corpus, tmp_path) + small_model_overrides(cell)
    cfg = compose_train(
        [f"model={cell}", "model.net.impl=scratch", "debug=fdr", *overrides], tmp_path / "run"
    )
    assert math.isfinite(train(cfg))


def test_run_directory_holds_config_checkpoints_samples_and_logs(corpus, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(corpus, tmp_path) + small_model_overrides("lstm")
    cfg = compose_train(
        [
            *overrides,
            *short_run(12, val_every=6),
        ],
        run_dir,
    )
    value = train(cfg)
    assert (run_dir / "config_resolved.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best_step*.ckpt"))) == 1
    samples = sorted((run_dir / "samples").glob("step_*.txt"))
    assert [p.name for p in samples] == ["step_0000006.txt", "step_0000012.txt"]
    assert len(samples[-1].read_text(encoding="utf-8")) == 1 + 20  # prompt "\n" + 20 chars
    metrics = (run_dir / "csv" / "version_0" / "metrics.csv").read_text()
    for name in ("train/loss_step", "val/loss", "val/bpc", "val/ppl", "test/loss", "lr-AdamW"):
        assert name in metrics
    assert value == pytest.approx(float(_last_value(metrics, "val/loss")), rel=1e-5)


def _last_value(csv_text: str, column: str) -> str:
    lines = csv_text.strip().splitlines()
    index = lines[0].split(",").index(column)
    values = [row.split(",")[index] for row in lines[1:] if row.split(",")[index]]
    return values[-1]


def test_checkpoint_alone_rebuilds_task_with_vocab_config_and_code_version(corpus, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(corpus, tmp_path) + small_model_overrides("gru")
    cfg = compose_train(
        [
            "model=gru",
            *overrides,
            *short_run(4),
        ],
        run_dir,
    )
    train(cfg)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["glimpse"]["config"]["model"]["net"]["cell"] == "gru"
    assert checkpoint["glimpse"]["code_version"].startswith("0.1.0")
    corpus_chars = set(corpus.read_text(encoding="utf-8"))
    corpus.unlink()
    task, meta = load_task(run_dir / "checkpoints" / "last.ckpt")
    assert meta["task"] == "glimpse.tasks.char_lm.CharLanguageModelTask"
    assert set(task.vocab.symbols[1:]) == corpus_chars
    text = task.generate("the ", 30, temperature=1.0, seed=0)
    assert len(text) == 30


def test_bf16_mixed_precision_on_cpu(corpus, tmp_path):
    overrides = tiny_overrides(corpus, tmp_path) + small_model_overrides("transformer")
    cfg = compose_train(
        [
            "model=transformer",
            "debug=fdr",
            "trainer.accelerator=cpu",
            "trainer.precision=bf16-mixed",
            *overrides,
        ],
        tmp_path / "run",
    )
    assert math.isfinite(train(cfg))


@pytest.mark.parametrize(
    ("debug", "extra"),
    [
        ("limit", []),
        ("overfit", ["trainer.max_steps=30", "trainer.check_val_every_n_epoch=5"]),
        ("profiler", ["trainer.max_steps=6", "trainer.val_check_interval=3"]),
    ],
)
def test_debug_configs_run(debug, extra, corpus, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(corpus, tmp_path) + small_model_overrides("lstm")
    assert math.isfinite(train(compose_train([f"debug={debug}", *overrides, *extra], run_dir)))
    if debug == "profiler":
        assert any(p.name.endswith("profile.txt") for p in run_dir.iterdir())
    if debug == "overfit":
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_fast_dev_run_of_vit_on_shapes_returns_top1_accuracy(tmp_path):
    cfg = compose_train([*tiny_image_overrides(tmp_path), "debug=fdr"], tmp_path / "run")
    assert cfg.optimized_metric == "val/acc1" and cfg.optimized_mode == "max"
    assert 0.0 <= train(cfg) <= 1.0
    assert len(list((tmp_path / "data").glob("shapes_32_0_n5_d2/*/*/*.png"))) == 7 * 5


def test_vit_on_shapes_keeps_the_best_top1_checkpoint_and_rebuilds_from_it(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*tiny_image_overrides(tmp_path), *short_run(4, val_every=2)]
    cfg = compose_train([*overrides, "trainer.log_every_n_steps=1"], run_dir)
    value = train(cfg)
    metrics = (run_dir / "csv" / "version_0" / "metrics.csv").read_text()
    for name in ("train/loss_step", "train/acc1", "val/acc1", "val/acc5", "test/acc1", "test/acc5"):
        assert name in metrics
    assert value == pytest.approx(float(_last_value(metrics, "val/acc1")), rel=1e-5)
    (best,) = (run_dir / "checkpoints").glob("best_step*.ckpt")
    checkpoint = torch.load(best, weights_only=True)
    states = [key for key in checkpoint["callbacks"] if key.startswith("ModelCheckpoint")]
    assert any("'monitor': 'val/acc1'" in key and "'mode': 'max'" in key for key in states)
    task, meta = load_task(run_dir / "checkpoints" / "last.ckpt")
    assert meta["task"] == "glimpse.tasks.classification.ImageClassifier"
    assert task.spec.class_names == tuple(sorted(KINDS)) and task.spec.image_size == 32
    assert isinstance(task.net, VisionTransformer) and task.net.num_classes == len(KINDS)
    assert task(torch.zeros(2, 3, 32, 32)).shape == (2, len(KINDS))


def test_fast_dev_run_of_swin_on_shapes(tmp_path):
    overrides = [
        *(o for o in tiny_image_overrides(tmp_path) if o != "model=vit"),
        "model=swin",
        "model.net._target_=glimpse.models.swin.swin_test",
        "debug=fdr",
    ]
    cfg = compose_train(overrides, tmp_path / "run")
    assert cfg.model.net._target_ == "glimpse.models.swin.swin_test"
    assert cfg.model.net.drop_path_rate == 0.2  # from conf/model/swin.yaml
    assert 0.0 <= train(cfg) <= 1.0


def test_resnet_on_shapes_trains_with_the_small_image_stem_and_mixing(tmp_path):
    overrides = [
        *(o for o in tiny_image_overrides(tmp_path) if o not in ("model=vit",) and "net." not in o),
        "model=resnet",
        "model.net.arch=resnet18",
        "model.net.small_images=true",
        "model.mixup_alpha=0.8",
        "model.cutmix_alpha=1.0",
        "model.ema_decay=0.9",
        *short_run(steps=4, val_every=2),
    ]
    cfg = compose_train(overrides, tmp_path / "run")
    assert cfg.model.channels_last and cfg.model.image_size_arg is None
    assert 0.0 <= train(cfg) <= 1.0
    figures = sorted(p.name for p in (tmp_path / "run" / "figures").iterdir())
    assert figures == ["confusion_matrix_step0000002.png", "confusion_matrix_step0000004.png"]


def test_fast_dev_run_of_pvt_on_shapes(tmp_path):
    overrides = [
        *(o for o in tiny_image_overrides(tmp_path) if o != "model=vit"),
        "model=pvt",
        "model.net._target_=glimpse.models.pvt.pvt_test",
        "debug=fdr",
    ]
    cfg = compose_train(overrides, tmp_path / "run")
    assert cfg.model.net._target_ == "glimpse.models.pvt.pvt_test"
    assert cfg.model.net.drop_path_rate == 0.1  # from conf/model/pvt.yaml
    assert 0.0 <= train(cfg) <= 1.0


def _deit_overrides(tmp_path, *extra: str) -> list[str]:
    """The tiny DeiT on shapes (model=deit), in place of tiny_image_overrides' ViT."""
    image = [o for o in tiny_image_overrides(tmp_path) if not o.startswith("model")]
    return [*image, "model=deit", "model.net._target_=glimpse.models.deit.deit_test", *extra]


def test_deit_distils_from_a_glimpse_checkpoint_and_rebuilds_without_the_teacher(tmp_path):
    teacher_dir = tmp_path / "teacher"
    teacher_cfg = [*tiny_image_overrides(tmp_path), *short_run(2), "test=false"]
    train(compose_train([*teacher_cfg, "model.figures=null"], teacher_dir))
    teacher_ckpt = teacher_dir / "checkpoints" / "last.ckpt"
    run_dir = tmp_path / "student"
    overrides = _deit_overrides(
        tmp_path,
        "model.teacher.kind=checkpoint",
        f"model.teacher.path={teacher_ckpt}",
        *short_run(2),
        "test=false",
        "trainer.log_every_n_steps=1",
    )
    cfg = compose_train(overrides, run_dir)
    assert cfg.model.mixup_alpha == 0.8 and cfg.model.distillation == "hard"
    assert 0.0 <= train(cfg) <= 1.0
    metrics = (run_dir / "csv" / "version_0" / "metrics.csv").read_text()
    for name in ("train/loss_cls", "train/loss_dist", "val/acc1", "val/teacher_acc1"):
        assert name in metrics
    assert any(p.name.startswith("attention_rollout") for p in (run_dir / "figures").iterdir())
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(key.startswith("net.") for key in checkpoint["state_dict"])
    teacher_ckpt.unlink()
    task, meta = load_task(run_dir / "checkpoints" / "last.ckpt")
    assert meta["task"] == "glimpse.tasks.distillation.DistillationClassifier"
    assert task._teacher is None
    assert task.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, len(KINDS))


def test_fast_dev_run_of_deit_with_a_random_torchvision_teacher(tmp_path):
    teacher = ["model.teacher.name=resnet18", "model.teacher.weights=null"]
    cfg = compose_train(_deit_overrides(tmp_path, *teacher, "debug=fdr"), tmp_path / "run")
    assert 0.0 <= train(cfg) <= 1.0
