"""Batches prepared one batch ahead: in order, the next one started before the current one is
handed out, errors passed on, and a DataLoader Lightning can rebuild with its sampler."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import DistributedSampler

from glimpse.data.prefetch import PrefetchingLoader, prefetch

CPU = torch.device("cpu")


def test_each_batch_is_prepared_before_the_one_before_it_is_handed_out():
    prepared: list[int] = []

    def prepare(batch: int, device: torch.device) -> torch.Tensor:
        prepared.append(batch)
        return torch.tensor([batch], device=device)

    handed_out = []
    for tensor in prefetch(range(4), prepare, CPU):
        batch = int(tensor)
        handed_out.append(batch)
        assert prepared == list(range(min(batch + 2, 4)))
    assert handed_out == [0, 1, 2, 3]
    assert list(prefetch([], prepare, CPU)) == []


def test_an_error_in_preparing_reaches_the_loop():
    def prepare(batch: int, device: torch.device) -> int:
        if batch == 2:
            raise ValueError("batch 2 is unreadable")
        return batch

    batches = prefetch(range(4), prepare, CPU)
    assert next(batches) == 0
    with pytest.raises(ValueError, match="batch 2 is unreadable"):
        next(batches)


def _double(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    return 2 * batch.to(device)


def test_the_loader_keeps_its_preparation_when_lightning_adds_a_distributed_sampler():
    data = torch.arange(8.0)
    loader = PrefetchingLoader(data, batch_size=2, device="cpu", prepare=_double)
    assert [b.tolist() for b in loader] == [[0, 2], [4, 6], [8, 10], [12, 14]]
    sampler = DistributedSampler(data, num_replicas=2, rank=1, shuffle=False)
    rebuilt = _update_dataloader(loader, sampler)
    assert isinstance(rebuilt, PrefetchingLoader) and rebuilt.prepare is _double
    assert [b.tolist() for b in rebuilt] == [[2, 6], [10, 14]]
