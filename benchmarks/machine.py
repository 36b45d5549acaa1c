"""What the benchmarks share: a device-synchronised clock, a record of the machine, the thread
setting and the common command-line options."""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from datetime import datetime, timezone
from typing import Any

import torch

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
