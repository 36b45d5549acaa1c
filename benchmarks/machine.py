"""What the benchmarks share: a device-synchronised clock, a record of the machine, the thread
setting and the common command-line options."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from glimpse.utils.provenance import code_version


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def machine_info(device_name: str, precision: str) -> dict[str, Any]:
    """What the numbers were measured on: code, library versions, CPUs, threads, device."""
    device = torch.device(device_name)
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": device_name,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision,
    }


#: Lightning's advice on data loading workers and a deprecation inside Lightning itself: noise
#: in every benchmark that fits a task.
LIGHTNING_NOISE = ("does not have many workers", "`isinstance(treespec, LeafSpec)`")


def quiet_lightning(*messages: str) -> None:
    """Lightning's log at warnings only, and its warnings containing :data:`LIGHTNING_NOISE` or
    ``messages`` hidden, so a benchmark's output is its tables."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for message in (*LIGHTNING_NOISE, *messages):
        warnings.filterwarnings("ignore", message=f".*{re.escape(message)}")


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` (nothing for None), warning when OMP_NUM_THREADS
    differs, as OpenMP pools started before then keep their own size."""
    if not threads:
        return
    torch.set_num_threads(threads)
    if os.environ.get("OMP_NUM_THREADS") != str(threads):
        warnings.warn(
            f"OMP_NUM_THREADS is {os.environ.get('OMP_NUM_THREADS')!r}, not {threads}; "
            "set it too so that every OpenMP pool has --threads threads.",
            stacklevel=2,
        )


def base_parser(description: str, parts: tuple[str, ...]) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--parts`` (all of ``parts`` by default),
    ``--device``, ``--precision``, ``--threads`` and ``--seed``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--parts", nargs="+", choices=parts, default=list(parts))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed"))
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


class StepTimer(Callback):
    """Times training batches ``first .. last``, counted over the whole fit (so a block may
    span epochs), and keeps every batch's loss."""

    def __init__(self, first: int, last: int, device: torch.device) -> None:
        self.first, self.last, self.device = first, last, device
        self.seen = 0
        self.start = self.end = 0.0
        self.losses: list[Tensor] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.seen == self.first:
            self.start = clock(self.device)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if isinstance(outputs, dict) and "loss" in outputs:
            self.losses.append(outputs["loss"].detach())
        if self.seen == self.last:
            self.end = clock(self.device)
        self.seen += 1

    @property
    def seconds(self) -> float:
        """Seconds from the start of batch ``first`` to the end of batch ``last``."""
        return self.end - self.start


def timed_fit(
    task: L.LightningModule,
    datamodule: L.LightningDataModule,
    args: argparse.Namespace,
    steps: int,
    gradient_clip_val: float,
    root: Path,
) -> StepTimer:
    """Fit ``task`` for ``--warmup + steps`` steps with a bare Trainer (no validation, logger,
    checkpoints or progress bar) on ``--device`` at ``--precision``, seeded with ``--seed``;
    the returned timer holds the time of the last ``steps``."""
    device = torch.device(args.device)
    timer = StepTimer(args.warmup, args.warmup + steps - 1, device)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        max_steps=args.warmup + steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=gradient_clip_val,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=False,
        benchmark=False,
        default_root_dir=root,
        callbacks=[timer],
    )
    torch.manual_seed(args.seed)
    trainer.fit(task, datamodule=datamodule)
    return timer
