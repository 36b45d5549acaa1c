"""Batches prepared on the training device one batch ahead (``data.decode_device=cuda``).

Lightning moves a batch to the device, and a datamodule's ``on_after_batch_transfer`` decodes it
there, just before the training step that reads it, so the decoding waits for the step before
and the step waits for the decoding. :class:`PrefetchingLoader` does that work one batch
early instead: while the model trains on batch ``k``, batch ``k + 1`` has already been copied to
the device and decoded there, on a CUDA stream of its own, so its copies and kernels overlap
the training step's (as timm's ``PrefetchLoader`` and NVIDIA DALI do). The batches reach
Lightning already on the device, and its own transfer leaves them where they are.

The preparation runs in the loop's thread, in the order of the batches, so augmentation draws
the same random numbers run after run; what overlaps is the device's work, not the Python that
issues it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import Any

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch.utils.data import DataLoader

#: ``prepare(batch, device)``: a loader's batch made ready on ``device`` (moved and decoded).
Prepare = Callable[[Any, torch.device], Any]


def prefetch(batches: Iterable[Any], prepare: Prepare, device: torch.device) -> Iterator[Any]:
    """``prepare(batch, device)`` of each of ``batches``, each one started before the previous
    one is handed out; on CUDA on a side stream, which the consuming stream waits for before it
    reads a batch (and which the caching allocator is told about, so the batch's memory is not
    reused while that stream still reads it)."""
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    iterator = iter(batches)

    def start(batch: Any) -> tuple[Any, torch.cuda.Event | None]:
        with torch.cuda.stream(stream) if stream is not None else nullcontext():
            prepared = prepare(batch, device)
        return prepared, stream.record_event() if stream is not None else None

    def hand_out(pending: tuple[Any, torch.cuda.Event | None]) -> Any:
        prepared, ready = pending
        if ready is None:
            return prepared
        consumer = torch.cuda.current_stream(device)
        consumer.wait_event(ready)
        apply_to_collection(prepared, torch.Tensor, lambda t: t.record_stream(consumer))
        return prepared

    try:
        pending = start(next(iterator))
    except StopIteration:
        return
    for batch in iterator:
        upcoming = start(batch)
        yield hand_out(pending)
        pending = upcoming
    yield hand_out(pending)


class PrefetchingLoader(DataLoader):
    """A DataLoader whose batches come out prepared on ``device`` by ``prepare``, one batch ahead
    (:func:`prefetch`). It takes every DataLoader argument, so Lightning can rebuild it with a
    distributed sampler."""

    def __init__(self, *args: Any, device: torch.device | str, prepare: Prepare, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.device = torch.device(device)
        self.prepare = prepare

    def __iter__(self) -> Iterator[Any]:
        return prefetch(super().__iter__(), self.prepare, self.device)
