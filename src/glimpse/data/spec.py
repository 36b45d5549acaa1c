"""The DataSpec: what a datamodule yields, recorded so a checkpoint can rebuild its task.

A task is constructed with ``spec.to_dict()`` and stores it in its hyperparameters, so the
vocabulary, class names and normalisation travel inside every checkpoint as plain Python
values (loadable with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Batch kinds. Each datamodule declares one as ``KIND``; each task lists those it accepts.
TEXT = "text"


@dataclass(frozen=True)
class DataSpec:
    """Description of a datamodule's batches.

    Attributes:
        kind: the batch kind, e.g. :data:`TEXT` for character streams.
        vocab: for text, the symbols in index order; index 0 is the unknown symbol.
        metadata: provenance and batching facts worth keeping (corpus name, size, hash).
    """

    kind: str
    vocab: tuple[str, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists, strings and numbers."""
        data = asdict(self)
        data["vocab"] = list(self.vocab) if self.vocab is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSpec:
        vocab = data.get("vocab")
        return cls(
            kind=data["kind"],
            vocab=tuple(vocab) if vocab is not None else None,
            metadata=dict(data.get("metadata") or {}),
        )
