"""One line per fast default of glimpse (``benchmarks/gpu_check.py --parts defaults``): the
default against what it replaced, in the same process, as a ratio (>1: the default is faster).

* ``fused_adamw``: AdamW steps per second, ``fused=True`` (glimpse's choice for CUDA
  parameters, :func:`glimpse.optim.settings.fused_kernels_apply`) against foreach (torch's
  default), on the parameters of a ViT with random gradients;
* ``channels_last``: ResNet training images/s with NHWC weights (glimpse's convolutional
  backbones on CUDA, :mod:`glimpse.tasks.acceleration`) against NCHW;
* ``tf32``: float32 ViT training images/s with ``set_float32_matmul_precision("high")``
  against ``"highest"`` (CUDA only);
* ``swin_sdpa``: Swin training images/s with its window attention through
  scaled_dot_product_attention (``WindowAttention.fused``, glimpse's choice on CUDA) against
  the explicit softmax;
* ``pinned_copy``: GB/s of a batch copied host to device from page-locked memory
  (``pin_memory``, glimpse's choice when the trainer is on CUDA) against pageable (CUDA only);
* ``prefetch``: ``decode_device=cuda`` training images/s of a ResNet whose batches are decoded
  one ahead on a side stream (:class:`glimpse.data.prefetch.PrefetchingLoader`) against decoded
  when the step needs them (Lightning's transfer and the datamodule's hook).

Each side runs ``warmup`` untimed and ``steps`` timed iterations, in alternating order over
``rounds``; the median per side is reported.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from machine import clock
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.data.images.device_decode import labels_to_device
from glimpse.data.images.image_folder import ImageFolderDataModule
from glimpse.data.prefetch import prefetch
from glimpse.models import swin
from glimpse.models.resnet import resnet
from glimpse.models.vit import vit_base_patch16, vit_small_patch16

#: A side: a callable that runs ``n`` iterations (untimed set-up done before).
Side = Callable[[int], None]


@dataclass(frozen=True)
class LineSettings:
    """Iterations of a line: ``warmup`` untimed and ``steps`` timed per side and round, over
    ``rounds`` rounds; ``workers`` DataLoader workers for the decoding line."""

    warmup: int = 2
    steps: int = 10
    rounds: int = 3
    workers: int = 4


def compare(
    default: Side,
    replaced: Side,
    device: torch.device,
    work: float,
    unit: str,
    settings: LineSettings,
) -> dict[str, Any]:
    """Time both sides (module docstring); ``work`` is the amount of ``unit`` per iteration."""
    seconds: dict[str, list[float]] = {"default": [], "replaced": []}
    sides = {"default": default, "replaced": replaced}
    for side in sides.values():
        side(settings.warmup)
    for index in range(settings.rounds):
        for name in list(sides) if index % 2 == 0 else list(sides)[::-1]:
            start = clock(device)
            sides[name](settings.steps)
            seconds[name].append(clock(device) - start)
    rates = {name: settings.steps * work / statistics.median(s) for name, s in seconds.items()}
    return {
        "unit": unit,
        "default": rates["default"],
        "replaced": rates["replaced"],
        "ratio": rates["default"] / rates["replaced"],
    }


def training_side(model: nn.Module, images: Tensor, labels: Tensor, autocast: bool) -> Side:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run(steps: int) -> None:
        for _ in range(steps):
            with torch.autocast(images.device.type, torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(model(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def batch(size: int, count: int, device: torch.device) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(count, 3, size, size, generator=generator).to(device)
    return images, torch.randint(10, (count,), generator=generator).to(device)


def fused_adamw(device: torch.device, gpu: bool, settings: LineSettings) -> dict[str, Any]:
    model = (vit_base_patch16 if gpu else vit_small_patch16)(num_classes=10).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p)

    def side(fused: bool) -> Side:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused, foreach=not fused)

        def run(steps: int) -> None:
            for _ in range(steps):
                optimizer.step()

        return run

    return compare(side(True), side(False), device, 1, "steps", settings)


def channels_last(device: torch.device, gpu: bool, settings: LineSettings) -> dict[str, Any]:
    arch, size, count = ("resnet50", 224, 64) if gpu else ("resnet18", 64, 8)
    images, labels = batch(size, count, device)
    nhwc = resnet(arch, num_classes=10).to(device).to(memory_format=torch.channels_last)
    nchw = resnet(arch, num_classes=10).to(device)
    return compare(
        training_side(nhwc, images, labels, gpu),
        training_side(nchw, images, labels, gpu),
        device,
        count,
        "images",
        settings,
    )


def tf32(device: torch.device, gpu: bool, settings: LineSettings) -> dict[str, Any]:
    if not gpu:
        return {"skipped": "TF32 is a CUDA tensor-core format"}
    images, labels = batch(224, 64, device)
    model = vit_small_patch16(num_classes=10).to(device)
    fp32 = training_side(model, images, labels, autocast=False)
    previous = torch.get_float32_matmul_precision()

    def with_precision(precision: str) -> Side:
        def run(steps: int) -> None:
            torch.set_float32_matmul_precision(precision)
            try:
                fp32(steps)
            finally:
                torch.set_float32_matmul_precision(previous)

        return run

    return compare(
        with_precision("high"), with_precision("highest"), device, 64, "images", settings
    )


def swin_sdpa(device: torch.device, gpu: bool, settings: LineSettings) -> dict[str, Any]:
    (build, size, count) = (swin.swin_tiny, 224, 32) if gpu else (swin.swin_test, 32, 4)
    images, labels = batch(size, count, device)
    model = build(img_size=size, num_classes=10).to(device)
    attention = [m for m in model.modules() if isinstance(m, swin.WindowAttention)]
    train = training_side(model, images, labels, gpu)

    def with_fused(fused: bool) -> Side:
        def run(steps: int) -> None:
            for module in attention:
                module.fused = fused
            train(steps)

        return run

    return compare(with_fused(True), with_fused(False), device, count, "images", settings)


def pinned_copy(device: torch.device, gpu: bool, settings: LineSettings) -> dict[str, Any]:
    if not gpu:
        return {"skipped": "page-locked memory speeds up copies to a CUDA device"}
    pageable = torch.randn(64, 3, 224, 224)
    pinned = pageable.pin_memory()
    gigabytes = pageable.numel() * pageable.element_size() / 1e9

    def copy(source: Tensor) -> Side:
        def run(steps: int) -> None:
            for _ in range(steps):
                source.to(device, non_blocking=True)

        return run

    return compare(copy(pinned), copy(pageable), device, gigabytes, "GB", settings)


def decoding_side(
    datamodule: ImageFolderDataModule, model: nn.Module, device: torch.device, ahead: bool
) -> Side:
    """Training steps of ``model`` on the datamodule's batches, decoded ahead or on demand."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = datamodule.train_dataloader()
    autocast = device.type == "cuda"

    def batches() -> Iterable[Any]:
        if ahead:
            return prefetch(loader, datamodule.decode_on, device)
        return (datamodule.on_after_batch_transfer(labels_to_device(b, device), 0) for b in loader)

    def run(steps: int) -> None:
        done = 0
        while done < steps:
            for images, labels in batches():
                with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                    loss = F.cross_entropy(model(images).float(), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                done += 1
                if done == steps:
                    break

    return run


def prefetched_decoding(
    device: torch.device,
    gpu: bool,
    settings: LineSettings,
    jpegs: Path,
    batch_size: int,
    image_size: int,
) -> dict[str, Any]:
    datamodule = ImageFolderDataModule(
        jpegs,
        image_size=image_size,
        batch_size=batch_size,
        num_workers=settings.workers,
        verify=False,
        pin_memory=gpu,
        decode_device="cuda",
    )
    datamodule.setup("fit")
    arch = "resnet50" if gpu else "resnet18"
    model = resnet(arch, num_classes=2).to(device).to(memory_format=torch.channels_last)
    return compare(
        decoding_side(datamodule, model, device, ahead=True),
        decoding_side(datamodule, model, device, ahead=False),
        device,
        batch_size,
        "images",
        settings,
    )


#: The lines that need nothing but the device.
LINES: dict[str, Callable[[torch.device, bool, Any], dict[str, Any]]] = {
    "fused_adamw": fused_adamw,
    "channels_last": channels_last,
    "tf32": tf32,
    "swin_sdpa": swin_sdpa,
    "pinned_copy": pinned_copy,
}
