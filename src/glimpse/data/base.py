"""What every glimpse datamodule does the same way: the spec, the loaders and their options.

:class:`GlimpseDataModule` is the base of the datamodules. A subclass declares its batch kind
as ``KIND``, builds its :class:`~glimpse.data.spec.DataSpec` into ``_spec`` in ``setup()``, and
says what each split's loader is (:meth:`~GlimpseDataModule.split_loader`), usually through
:meth:`~GlimpseDataModule.loader`, which gives every split the same shuffling, last-batch,
worker and pinning rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import lightning as L
from torch.utils.data import DataLoader, Dataset, IterableDataset

from glimpse.data.prefetch import PrefetchingLoader, Prepare
from glimpse.data.spec import DataSpec
from glimpse.errors import ConfigError

SPLITS = ("train", "val", "test")
#: The splits each Lightning stage reads.
STAGE_SPLITS = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}


def normalisation(
    mean: Sequence[float], std: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` as tuples of floats; :class:`~glimpse.errors.ConfigError` unless each has
    one value per RGB channel."""
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"data.mean={list(mean)} and data.std={list(std)} need 3 values.")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def check_verification(verify: bool, skip_corrupt: bool) -> None:
    """:class:`~glimpse.errors.ConfigError` for ``skip_corrupt`` without the pass that finds the
    files to skip."""
    if skip_corrupt and not verify:
        raise ConfigError("data.skip_corrupt=true needs data.verify=true to find the files.")


class GlimpseDataModule(L.LightningDataModule):
    """A LightningDataModule that describes its batches with a DataSpec.

    Args:
        batch_size: training samples per batch (per device).
        eval_batch_size: validation and test samples per batch; None is ``batch_size``.
        num_workers: DataLoader worker processes.
        pin_memory: page-locked batches; None pins them when training on a CUDA device.
    """

    #: The batch kind (:mod:`glimpse.batches`) the datamodule yields.
    KIND: ClassVar[str]

    def __init__(
        self,
        batch_size: int,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self._spec: DataSpec | None = None

    @property
    def spec(self) -> DataSpec:
        """What the batches are, known once :meth:`prepare_data` and :meth:`setup` have run."""
        if self._spec is None:
            raise RuntimeError("Call prepare_data() and setup() before reading the spec.")
        return self._spec

    def pin(self) -> bool:
        """Whether batches are page-locked: ``pin_memory``, or when None, whether the trainer
        runs on a CUDA device."""
        if self.pin_memory is not None:
            return self.pin_memory
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def loader(
        self,
        dataset: Dataset,
        train: bool,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        num_workers: int | None = None,
        prepare_on_device: Prepare | None = None,
    ) -> DataLoader:
        """A DataLoader of ``dataset`` with the datamodule's batch sizes, workers and pinning.

        Training shuffles and drops the last partial batch when the dataset holds at least one
        whole batch: BatchNorm statistics of a batch of one or two samples are noise, and every
        step then averages the same number of samples. Evaluation keeps the dataset's order
        and every sample. An IterableDataset orders and shares itself out. ``num_workers``
        None is the datamodule's; workers persist from epoch to epoch.

        ``prepare_on_device(batch, device)`` (decoding on the device) makes it a
        :class:`~glimpse.data.prefetch.PrefetchingLoader` that prepares each batch on the
        trainer's device one batch ahead, when the datamodule is attached to a trainer; without
        one the batches come out as they are.
        """
        iterable = isinstance(dataset, IterableDataset)
        batch_size = self.batch_size if train else self.eval_batch_size
        workers = self.num_workers if num_workers is None else num_workers
        options: dict[str, Any] = dict(
            batch_size=batch_size,
            shuffle=train and not iterable,
            drop_last=train and not iterable and len(dataset) >= batch_size,
            num_workers=workers,
            collate_fn=collate_fn,
            pin_memory=self.pin(),
            persistent_workers=workers > 0,
        )
        if prepare_on_device is not None and self.trainer is not None:
            device = self.trainer.strategy.root_device
            return PrefetchingLoader(dataset, device=device, prepare=prepare_on_device, **options)
        return DataLoader(dataset, **options)

    def split_loader(self, split: str) -> Any:
        """The loader (or the list of loaders) of ``split``: train, val or test."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to load a split.")

    def train_dataloader(self) -> Any:
        return self.split_loader("train")

    def val_dataloader(self) -> Any:
        return self.split_loader("val")

    def test_dataloader(self) -> Any:
        return self.split_loader("test")
