"""What the BYOL and DINO tests share: tiny tasks, synthetic multi-view batches, and the
overrides of seconds-long runs through train.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from glimpse.batches import MULTI_VIEW_IMAGES
from glimpse.data.images.image_folder import collate_labelled_images
from glimpse.data.spec import DataSpec
from glimpse.data.ssl.multiview import collate_multi_view
from glimpse.tasks.byol import BYOL
from glimpse.tasks.dino import DINO

NUM_CLASSES = 3
RESNET18 = {"_target_": "glimpse.models.resnet.resnet", "arch": "resnet18"}
VIT_TEST = {"_target_": "glimpse.models.vit.vit_test"}
#: A small BYOL head and DINO head for tests.
SMALL_PROJECTOR = {"hidden_dim": 32, "out_dim": 16}
SMALL_PREDICTOR = {"hidden_dim": 32}
SMALL_DINO_HEAD = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}


def ssl_spec(image_size: int = 32, num_classes: int = NUM_CLASSES) -> dict:
    return DataSpec(
        kind=MULTI_VIEW_IMAGES,
        class_names=tuple(f"class{i}" for i in range(num_classes)),
        image_size=image_size,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    ).to_dict()


def byol_task(**overrides: Any) -> BYOL:
    """BYOL with a ResNet-18 on 32 px images and small heads, AdamW unless overridden."""
    settings: dict[str, Any] = {
        "spec": ssl_spec(),
        "backbone": RESNET18,
        "image_size_arg": None,
        "projector": SMALL_PROJECTOR,
        "predictor": SMALL_PREDICTOR,
        "optimizer": {"name": "adamw", "lr": 1e-3, "lr_batch_size": None, "weight_decay": 0.01},
        "scheduler": {"warmup_steps": 1, "min_lr_ratio": 1.0},
        "probe": {"lr": 1e-2, "weight_decay": 0.0},
        "figures": None,
        **overrides,
    }
    return BYOL(**settings)


def dino_task(**overrides: Any) -> DINO:
    """DINO with the test ViT on 32 px images and a 64-prototype head."""
    settings: dict[str, Any] = {
        "spec": ssl_spec(),
        "backbone": VIT_TEST,
        "head": SMALL_DINO_HEAD,
        "optimizer": {"name": "adamw", "lr": 1e-3, "lr_batch_size": None, "weight_decay": 0.04},
        "scheduler": {"warmup_steps": 1, "min_lr_ratio": 1.0},
        "teacher_temp": {"start": 0.04, "end": 0.07, "warmup_epochs": 3},
        "probe": {"lr": 1e-2, "weight_decay": 0.0},
        "figures": None,
        **overrides,
    }
    return DINO(**settings)


def views_batch(
    batch: int = 4, sizes: tuple[int, ...] = (32, 32), seed: int = 0
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Random views ``(batch, 3, s, s)`` for each size in ``sizes`` and labels ``(batch,)``."""
    generator = torch.Generator().manual_seed(seed)
    views = tuple(torch.randn(batch, 3, s, s, generator=generator) for s in sizes)
    return views, torch.randint(NUM_CLASSES, (batch,), generator=generator)


def multi_view_loader(
    num_images: int = 8, sizes: tuple[int, ...] = (32, 32), batch_size: int = 4, seed: int = 0
) -> DataLoader:
    """A loader of :class:`MultiViewImages` batches of random views."""
    generator = torch.Generator().manual_seed(seed)
    samples = [
        (
            tuple(torch.randn(3, s, s, generator=generator) for s in sizes),
            int(torch.randint(NUM_CLASSES, (1,), generator=generator)),
        )
        for _ in range(num_images)
    ]
    return DataLoader(samples, batch_size=batch_size, collate_fn=collate_multi_view)


def labelled_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 4) -> DataLoader:
    """A loader of :class:`LabelledImages` batches of the given images and labels."""
    return DataLoader(
        list(zip(images, labels.tolist(), strict=True)),
        batch_size=batch_size,
        collate_fn=collate_labelled_images,
    )


def tiny_ssl_overrides(tmp_path: Path, model: str) -> list[str]:
    """``model`` (byol: ResNet-18; dino: the test ViT, 2 local crops of 16 px) with small heads
    on 32 px multi-view shapes, 5 per class (21 train, 7 val, 7 test images), batch 8."""
    if model == "byol":
        method = [
            "model.projector.hidden_dim=32",
            "model.projector.out_dim=16",
            "model.predictor.hidden_dim=32",
        ]
    else:
        method = [
            "model.backbone._target_=glimpse.models.vit.vit_test",
            "model.head.out_dim=64",
            "model.head.hidden_dim=32",
            "model.head.bottleneck_dim=16",
            "data.views.num_local=2",
            "data.views.local_size=16",
        ]
    return [
        f"model={model}",
        "data=ssl_shapes",
        "data.base.num_per_class=5",
        "data.batch_size=8",
        "data.num_workers=0",
        *method,
        "logger=csv",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]


def metric_rows(run_dir: Path) -> list[dict[str, float]]:
    """The rows of a run's CSV log (logger=csv) as ``{column: value}`` of the filled cells."""
    header, *rows = (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    columns = header.split(",")
    return [
        {c: float(v) for c, v in zip(columns, row.split(","), strict=True) if v} for row in rows
    ]


def shrunk_shapes_experiment(tmp_path: Path, experiment: str, steps: int = 40) -> list[str]:
    """``experiment`` (shapes_byol_cpu or shapes_dino_cpu) shrunk to seconds: 150 shapes per
    class (840 train, 105 val images), batch 32, ``steps`` steps at a higher learning rate
    (BYOL: 2e-3 and a faster target, tau 0.9; DINO: 5e-4, 2 local crops; its teacher collapses
    at tau 0.9 or lr 4e-3), validated on the whole splits halfway and at the end."""
    if experiment == "shapes_byol_cpu":
        method = ["model.optimizer.lr=2e-3", "model.teacher_momentum=0.9"]
    else:
        method = ["model.optimizer.lr=5e-4", "data.views.num_local=2"]
    return [
        f"experiment={experiment}",
        "data.base.num_per_class=150",
        "data.batch_size=32",
        "data.num_workers=0",
        "model.optimizer.lr_batch_size=null",
        "model.scheduler.warmup_steps=5",
        *method,
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps // 2}",
        "logger=csv",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]
