"""The loader rules every datamodule shares (data/base.py): pinned batches and a prefetching
loader when the trainer runs on CUDA, persistent workers."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, TensorDataset

from glimpse.data.base import GlimpseDataModule
from glimpse.data.prefetch import PrefetchingLoader


class Numbers(GlimpseDataModule):
    KIND = "numbers"

    def split_loader(self, split: str) -> DataLoader:
        return self.loader(TensorDataset(torch.arange(8.0)), split == "train")


def _on(device: str) -> SimpleNamespace:
    """What the loaders read of a trainer: its strategy's root device."""
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))


def _prepare(batch, device):
    return batch


def test_batches_are_pinned_for_a_cuda_trainer_unless_the_config_says():
    data = Numbers(batch_size=4)
    assert not data.train_dataloader().pin_memory  # no trainer
    data.trainer = _on("cpu")
    assert not data.train_dataloader().pin_memory
    data.trainer = _on("cuda")
    assert data.train_dataloader().pin_memory and data.val_dataloader().pin_memory
    data.pin_memory = False
    assert not data.train_dataloader().pin_memory


def test_workers_persist_across_epochs():
    assert Numbers(batch_size=4, num_workers=2).train_dataloader().persistent_workers
    assert not Numbers(batch_size=4).train_dataloader().persistent_workers


def test_a_batch_preparation_on_the_device_prefetches_under_a_trainer_only():
    data = Numbers(batch_size=4)
    dataset = TensorDataset(torch.arange(8.0))
    plain = data.loader(dataset, True, prepare_on_device=_prepare)
    assert type(plain) is DataLoader
    data.trainer = _on("cuda")
    loader = data.loader(dataset, True, prepare_on_device=_prepare)
    assert isinstance(loader, PrefetchingLoader) and loader.device == torch.device("cuda")
    assert loader.prepare is _prepare and loader.pin_memory and loader.drop_last
    assert type(data.loader(dataset, True)) is DataLoader
