"""Batching a token sequence for language modelling.

:class:`StreamBatches` is truncated backpropagation through time as lecture 9 draws it: the
split is cut into ``world_size * batch_size`` contiguous streams; rank ``r`` owns streams
``r*B .. (r+1)*B - 1``; batch ``k`` holds characters ``k*T .. (k+1)*T - 1`` of each of the
rank's streams, so batch ``k + 1`` continues batch ``k`` in every row and a model may carry its
hidden state from one batch to the next.

:class:`RandomWindows` draws independent windows at uniformly random offsets (no carried
state), the usual way to train a Transformer.

Both yield ``(inputs (B, T), targets (B, T))`` where ``targets[:, t]`` is the character that
follows ``inputs[:, t]`` in the text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset


class StreamBatches:
    """Contiguous streams of ``tokens (N,)``, already batched (iterate it through
    :class:`StreamLoader`).

    Each of the ``world_size * batch_size`` streams holds ``L = (N - 1) // (world_size *
    batch_size)`` inputs and their ``L`` next-character targets; an epoch has
    ``L // seq_len`` batches. :attr:`unused` counts the characters that fit in no stream or
    no full batch (fewer than ``world_size * batch_size * (seq_len + 1)``).
    """

    def __init__(
        self,
        tokens: Tensor,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        streams = world_size * batch_size
        stream_len = (len(tokens) - 1) // streams
        self.num_batches = stream_len // seq_len
        if self.num_batches < 1:
            raise ValueError(
                f"{len(tokens)} characters cut into {streams} streams leave {stream_len} per "
                f"stream, fewer than seq_len={seq_len}."
            )
        used = self.num_batches * seq_len
        starts = torch.arange(rank * batch_size, (rank + 1) * batch_size) * stream_len
        offsets = torch.arange(used + 1)
        self.rows = tokens[starts[:, None] + offsets[None, :]]
        self.seq_len = seq_len
        self.unused = len(tokens) - streams * used
        self.resume_at = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches in order; after a mid-epoch resume the first pass starts at :attr:`resume_at`."""
        start, self.resume_at = self.resume_at, 0
        for k in range(start, self.num_batches):
            chunk = self.rows[:, k * self.seq_len : (k + 1) * self.seq_len + 1]
            yield chunk[:, :-1], chunk[:, 1:]


class StreamLoader:
    """What a datamodule hands Lightning for :class:`StreamBatches`: a sized iterable of ready
    batches that a run resumed mid-epoch restarts where it stopped.

    It is deliberately not a ``DataLoader``: Lightning re-creates DataLoaders with a sampler of
    its own (a ``DistributedSampler`` under DDP, a ``SequentialSampler`` with
    ``overfit_batches``), which would reorder or re-shard streams that are already ordered and
    split per rank. Lightning saves and restores it through ``state_dict``/``load_state_dict``;
    ``batches_done`` reports how many batches of the current epoch the trainer has completed
    (batches merely prefetched do not count).
    """

    def __init__(self, batches: StreamBatches, batches_done: Callable[[], int] | None = None):
        self.batches = batches
        self.batches_done = batches_done

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.batches)

    def state_dict(self) -> dict[str, Any]:
        return {"batches_done": int(self.batches_done()) if self.batches_done else 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.resume_at = state["batches_done"] % len(self.batches)


class RandomWindows(Dataset):
    """``num_windows`` windows of ``seq_len + 1`` characters at random offsets of ``tokens``.

    Offsets are drawn anew for each item from the global torch RNG (seeded per worker by
    Lightning's ``seed_everything(workers=True)``), as in nanoGPT's ``get_batch``. With
    ``random=False`` window ``i`` starts at ``i * seq_len`` (a deterministic pass, used for
    validation and testing so that every character is scored once).
    """

    def __init__(self, tokens: Tensor, seq_len: int, num_windows: int | None, random: bool):
        if len(tokens) < seq_len + 1:
            raise ValueError(
                f"{len(tokens)} characters are fewer than seq_len + 1 = {seq_len + 1}."
            )
        self.tokens = tokens
        self.seq_len = seq_len
        self.random = random
        self.num_windows = num_windows or (len(tokens) - 1) // seq_len

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if self.random:
            start = int(torch.randint(len(self.tokens) - self.seq_len, ()))
        else:
            start = index * self.seq_len
        window = self.tokens[start : start + self.seq_len + 1]
        return window[:-1], window[1:]
