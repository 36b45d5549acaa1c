"""A torchmetrics ``Metric`` whose states are lists of Python objects (strings, dicts).

torchmetrics gathers list states as tensors, which strings and detection records are not.
:class:`ObjectListMetric` gathers them with ``torch.distributed.all_gather_object`` instead,
concatenated in rank order, so that every rank computes the metric on the whole pass, and keeps
them out of ``.to(device)`` and dtype casts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch.distributed as dist
from torchmetrics import Metric


class ObjectListMetric(Metric):
    """Base of metrics with list-of-objects states named in :attr:`OBJECT_STATES`; each is
    registered with ``add_state(name, default=[], dist_reduce_fx=None)`` by ``__init__``."""

    OBJECT_STATES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in self.OBJECT_STATES:
            self.add_state(name, default=[], dist_reduce_fx=None)

    def __hash__(self) -> int:
        """Identity: torchmetrics hashes the state values, which dicts are not."""
        return object.__hash__(self)

    def _sync_dist(
        self, dist_sync_fn: Callable | None = None, process_group: dist.ProcessGroup | None = None
    ) -> None:
        """Concatenate every rank's lists in rank order."""
        group = process_group or self.process_group
        for name in self.OBJECT_STATES:
            gathered: list[list] = [[] for _ in range(dist.get_world_size(group))]
            dist.all_gather_object(gathered, getattr(self, name), group=group)
            setattr(self, name, [item for part in gathered for item in part])

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = ()) -> Metric:
        """Move or cast the module without touching the object states."""
        return super()._apply(fn, exclude_state=(*self.OBJECT_STATES, *exclude_state))
