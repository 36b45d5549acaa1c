"""What both benchmarks share: a device-synchronised clock and a record of the machine."""

from __future__ import annotations

import os
import platform
import time
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
