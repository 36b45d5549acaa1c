"""Model FLOP utilisation: the FLOPs a training step needs, over what the device could do.

``MFU = model FLOPs per step x steps per second / peak FLOP/s`` (Chowdhery et al. 2022,
PaLM, appendix B). The FLOPs are counted, not estimated: :class:`torch.utils.flop_counter.
FlopCounterMode` adds up the matrix products, convolutions and attention of one forward and
backward pass as PyTorch dispatches them (2 FLOPs per multiply-add), so recomputation or a
fused kernel does not change the count. The peak is the dense bfloat16 tensor-core rate of
the device's datasheet (without sparsity), looked up by the name CUDA reports.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

#: Dense bf16 tensor FLOP/s by a part of the device name, the first match wins (so the PCIe
#: and NVL H100s come before the SXM one, L40S before L4). NVIDIA datasheets.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4e12),
    ("H100 NVL", 835.0e12),
    ("H100 PCIe", 756.0e12),
    ("H100", 989.4e12),
    ("A100", 312.0e12),
    ("L40S", 362.1e12),
    ("L4", 121.0e12),
    ("A10", 125.0e12),
)


def peak_bf16_flops(device_name: str) -> float | None:
    """The dense bf16 peak of the device called ``device_name`` (``torch.cuda.
    get_device_name()``), or None for a device not in :data:`PEAK_BF16_FLOPS` (and the CPU)."""
    for part, peak in PEAK_BF16_FLOPS:
        if part in device_name:
            return peak
    return None


def step_flops(step: Callable[[], torch.Tensor]) -> int:
    """The FLOPs of ``step()`` (a forward returning the loss) and of the loss's backward."""
    with FlopCounterMode(display=False) as counter:
        step().backward()
    return counter.get_total_flops()


def mfu(flops_per_step: int, steps_per_s: float, peak: float | None) -> float | None:
    """The fraction of ``peak`` FLOP/s that ``flops_per_step`` at ``steps_per_s`` is."""
    return None if peak is None else flops_per_step * steps_per_s / peak
