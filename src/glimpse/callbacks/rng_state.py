"""The random number generators' state in every checkpoint, so a resumed run draws what the
uninterrupted run would have drawn (dropout masks, random windows, augmentations)."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


class RNGState(L.Callback):
    """Save the states of Python's ``random``, NumPy's global generator, torch's CPU generator
    and every CUDA device's generator with each checkpoint, and restore them when training
    resumes from one. Lightning checkpoints the model, optimizer and loops but not these, so
    without this a run resumed mid-way draws a different dropout mask at every later step.

    The state is kept in tensors and plain tuples, so checkpoints still load with
    ``torch.load(weights_only=True)``. Under DDP each process restores global rank zero's state.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.copy()), position, has_gauss, cached_gaussian),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, position, has_gauss, cached_gaussian = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy(), position, has_gauss, cached_gaussian))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
