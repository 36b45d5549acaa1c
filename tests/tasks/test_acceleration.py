"""torch.compile of the task networks (inductor on the CPU), and the CUDA-only speed settings
wired on a CPU.

Each compiled test trains a tiny task eagerly and compiled from the same weights on the same
batches and compares the losses: inductor's kernels reorder float32 sums, so they agree to
rounding, not bit for bit. Compiling is slow on a shared CPU (tens of seconds a graph with a
cold cache), so the tests are few and each covers several promises.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from _helpers_ssl import dino_task, labelled_loader, multi_view_loader
from conftest import make_corpus
from lightning.pytorch.callbacks import Callback
from torch._dynamo.utils import counters

from glimpse.batches import LABELLED_IMAGES
from glimpse.data.spec import DataSpec
from glimpse.data.text.char_text import CharTextDataModule
from glimpse.errors import ConfigError
from glimpse.tasks.acceleration import (
    CompileSettings,
    allow_tf32,
    channels_last_backbones,
    compile_networks,
    is_compiled,
    prepare_for_device,
)
from glimpse.tasks.char_lm import CharLanguageModelTask
from glimpse.tasks.checkpoints import load_task
from glimpse.tasks.classification import ImageClassifier
from glimpse.tasks.detection import Detector

COMPILED = CompileSettings(enabled=True)
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


class LossRecorder(Callback):
    """Every training step's loss."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def graphs_compiled() -> int:
    """Graphs dynamo compiled since the counters were cleared, after checking that no network
    fell back to eager for want of room in dynamo's cache (which would make every comparison
    with eager pass trivially)."""
    fallbacks = [r for r in counters["unimplemented"] if "recompile limit" in r.lower()]
    assert not fallbacks, fallbacks
    return counters["stats"]["unique_graphs"]


def fit(task: L.LightningModule, steps: int, root, **data: Any) -> tuple[list[float], L.Trainer]:
    """Train ``task`` for ``steps`` steps on the CPU (one validation batch at the end when a
    val loader is given); the losses and the trainer."""
    recorder = LossRecorder()
    validates = "val_dataloaders" in data or "datamodule" in data
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_val_batches=1 if validates else 0,
        val_check_interval=steps if validates else None,
        check_val_every_n_epoch=None,
        max_epochs=-1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[recorder],
    )
    torch.manual_seed(0)
    trainer.fit(task, **data)
    return recorder.losses, trainer


def classifier(ema_decay: float | None = None) -> ImageClassifier:
    torch.manual_seed(0)
    spec = DataSpec(
        kind=LABELLED_IMAGES,
        class_names=("a", "b", "c"),
        image_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    return ImageClassifier(
        spec=spec.to_dict(),
        net={"_target_": "glimpse.models.vit.vit_test", "depth": 1, "drop_path_rate": 0.0},
        optimizer={"lr": 1e-3, "weight_decay": 0.05},
        scheduler={"warmup_steps": 1, "min_lr_ratio": 0.1},
        ema_decay=ema_decay,
    )


def test_a_compiled_classifier_with_ema_trains_as_eager_and_checkpoints_eager_keys(tmp_path):
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(8, 3, 32, 32, generator=generator), torch.arange(8) % 3
    loaders = {
        "train_dataloaders": labelled_loader(images, labels),
        "val_dataloaders": labelled_loader(images, labels),
    }
    eager, compiled = classifier(ema_decay=0.5), classifier(ema_decay=0.5)
    assert compile_networks(compiled, COMPILED) == ["net"] and is_compiled(compiled.net)
    counters.clear()
    eager_losses, eager_trainer = fit(eager, 3, tmp_path / "eager", **loaders)
    losses, trainer = fit(compiled, 3, tmp_path / "compiled", **loaders)
    torch.testing.assert_close(losses, eager_losses, **TOLERANCE)
    # Validation ran on the EMA weights swapped into the compiled network.
    val_loss = trainer.callback_metrics["val/loss"]
    torch.testing.assert_close(val_loss, eager_trainer.callback_metrics["val/loss"], **TOLERANCE)

    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    keys = torch.load(path, weights_only=True)["state_dict"].keys()
    assert "net.pos_embed" in keys and not any("_orig_mod" in key for key in keys)
    with torch.no_grad():
        expected = compiled.eval()(images)
        loaded, _ = load_task(path)
        assert not is_compiled(loaded.net)
        torch.testing.assert_close(loaded.eval()(images), expected, **TOLERANCE)
        recompiled = classifier()
        compile_networks(recompiled, COMPILED)
        recompiled.load_state_dict(loaded.state_dict())
        torch.testing.assert_close(recompiled.eval()(images), expected, **TOLERANCE)
    assert graphs_compiled() >= 3  # training, evaluation (EMA), the reloaded copy


def test_a_compiled_scratch_lstm_carries_its_state_as_eager(tmp_path):
    datamodule = CharTextDataModule(
        corpus="text", path=str(make_corpus(tmp_path / "c.txt")), seq_len=8, batch_size=4
    )
    datamodule.setup("fit")
    net = {
        "_target_": "glimpse.models.char_rnn.CharRNN",
        "cell": "lstm",
        "impl": "scratch",
        "embedding_dim": 8,
        "hidden_size": 16,
        "num_layers": 1,
    }
    tasks = []
    for _ in range(2):
        torch.manual_seed(0)
        tasks.append(
            CharLanguageModelTask(
                datamodule.spec.to_dict(),
                net,
                {"lr": 1e-2, "weight_decay": 0.0},
                {"warmup_steps": 1, "min_lr_ratio": 0.1},
                samples=None,
            )
        )
    eager, compiled = tasks
    assert eager.carries_state
    compile_networks(compiled, COMPILED)
    loader = {"train_dataloaders": datamodule.train_dataloader()}
    eager_losses, _ = fit(eager, 4, tmp_path / "eager", **loader)
    counters.clear()
    losses, _ = fit(compiled, 4, tmp_path / "compiled", **loader)
    assert graphs_compiled() >= 1
    torch.testing.assert_close(losses, eager_losses, **TOLERANCE)
    for eager_state, state in zip(eager._state["train"], compiled._state["train"], strict=True):
        torch.testing.assert_close(state, eager_state, **TOLERANCE)


def test_compiled_dino_trains_its_teacher_as_eager_on_two_crop_sizes(tmp_path):
    backbone = {"_target_": "glimpse.models.vit.vit_test", "depth": 1}
    tasks = []
    for _ in range(2):
        torch.manual_seed(0)
        tasks.append(dino_task(backbone=backbone, probe=None))
    eager, compiled = tasks
    names = compile_networks(compiled, COMPILED)
    assert {"student.backbone", "teacher.backbone"} <= set(names)
    assert all(is_compiled(compiled.get_submodule(name)) for name in names)
    assert not is_compiled(eager.teacher.backbone)
    loader = {"train_dataloaders": multi_view_loader(sizes=(32, 32, 16, 16))}
    eager_losses, _ = fit(eager, 2, tmp_path / "eager", **loader)
    counters.clear()
    losses, _ = fit(compiled, 2, tmp_path / "compiled", **loader)
    assert graphs_compiled() >= len(names)  # every network, the backbones for both sizes
    torch.testing.assert_close(losses, eager_losses, **TOLERANCE)
    teacher = compiled.teacher.state_dict()
    for name, value in eager.teacher.state_dict().items():
        torch.testing.assert_close(teacher[name], value, **TOLERANCE)
    assert not torch.equal(teacher["backbone.pos_embed"], compiled.student.backbone.pos_embed)


def test_compiling_a_fused_lstm_says_it_runs_eagerly(caplog):
    spec = DataSpec(kind="text", vocab=("\ufffd", "a", "b"), metadata={"batching": "windows"})
    net = {"_target_": "glimpse.models.char_rnn.CharRNN", "impl": "fused", "hidden_size": 8}
    task = CharLanguageModelTask(spec.to_dict(), net, {"lr": 1e-3}, {"warmup_steps": 1})
    with caplog.at_level("WARNING", logger="glimpse.tasks.acceleration"):
        compile_networks(task, COMPILED)
    assert "net holds a torch.nn.LSTM, which torch.compile does not trace" in caplog.text


def test_compile_options_are_checked():
    assert CompileSettings.from_model_config({}) == CompileSettings()
    settings = CompileSettings.from_model_config(
        {"compile": True, "compile_mode": "max-autotune", "compile_dynamic": False}
    )
    assert (settings.enabled, settings.mode, settings.dynamic) == (True, "max-autotune", False)
    with pytest.raises(ConfigError, match="model.compile_mode='fast'"):
        CompileSettings.from_model_config({"compile": True, "compile_mode": "fast"})
    with pytest.raises(ConfigError, match="model.compile='yes'"):
        CompileSettings.from_model_config({"compile": "yes"})


def detector() -> Detector:
    spec = DataSpec(kind="detection", class_names=("a", "b"), image_size=64)
    return Detector(
        spec=spec.to_dict(),
        net={"_target_": "glimpse.models.detr.detr_small"},
        matcher={"cost_class": 1.0, "cost_bbox": 5.0, "cost_giou": 2.0},
        criterion={"eos_coef": 0.1},
        optimizer={"lr": 1e-4},
        pretrained=None,
    )


def test_on_cuda_the_cnn_backbones_go_channels_last_and_matmuls_tf32(monkeypatch):
    task = detector()
    assert channels_last_backbones(classifier()) == []  # a ViT has no CNN backbone
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    precision = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        prepare_for_device(task, torch.device("cuda"), CompileSettings())
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(precision)
    weights = [m.weight for m in task.net.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not is_compiled(task.net)


def test_tf32_is_left_alone_on_the_cpu_and_before_ampere(monkeypatch):
    precision = torch.get_float32_matmul_precision()
    assert not allow_tf32(torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert not allow_tf32(torch.device("cuda"))
    assert torch.get_float32_matmul_precision() == precision
