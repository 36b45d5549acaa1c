"""The DataSpec: what a datamodule yields, recorded so a checkpoint can rebuild its task.

A task is constructed with ``spec.to_dict()`` and stores it in its hyperparameters, so the
vocabulary, class names and normalisation travel inside every checkpoint as plain Python
values (loadable with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: DataSpec fields that describe images; None for other kinds of data.
IMAGE_FIELDS = ("class_names", "image_size", "mean", "std")
#: DataSpec fields left out of :meth:`DataSpec.to_dict` when None, so older checkpoints' dicts
#: are unchanged.
OPTIONAL_FIELDS = (*IMAGE_FIELDS, "tokenizer")


@dataclass(frozen=True)
class DataSpec:
    """Description of a datamodule's batches.

    Attributes:
        kind: the batch kind (:mod:`glimpse.batches`), e.g. ``text`` for character streams.
        vocab: for text, the symbols in index order; index 0 is the unknown symbol. For
            captions, the :class:`~glimpse.data.text.word_tokenizer.WordTokenizer`'s words in id
            order (``<pad>``, ``<start>``, ``<end>``, ``<unk>`` first).
        metadata: provenance and batching facts worth keeping (corpus name, size, hash).
        class_names: for labelled images and detection, the human-readable name of each
            class, in label order.
        image_size: the side of the square images a model receives, in pixels; for
            detection, the longest side an image may have after resizing.
        mean, std: the per-channel (RGB) normalisation applied to images in [0, 1].
        tokenizer: for image-text pairs, the subword tokenizer as the plain dict it saves
            itself to (:mod:`glimpse.data.text.bpe`), so a checkpoint can tokenize new text.

    Checkpoints written before a field existed load with that field None.
    """

    kind: str
    vocab: tuple[str, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    tokenizer: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists, strings and numbers. The image fields and the tokenizer are left out
        when None, so a text spec's dict (and the checkpoints holding it) is what it was before
        they existed."""
        data = asdict(self)
        for name in ("vocab", *IMAGE_FIELDS):
            value = data[name]
            data[name] = list(value) if isinstance(value, tuple) else value
        return {k: v for k, v in data.items() if k not in OPTIONAL_FIELDS or v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSpec:
        def as_tuple(name: str) -> tuple | None:
            value = data.get(name)
            return tuple(value) if value is not None else None

        image_size = data.get("image_size")
        return cls(
            kind=data["kind"],
            vocab=as_tuple("vocab"),
            metadata=dict(data.get("metadata") or {}),
            class_names=as_tuple("class_names"),
            image_size=int(image_size) if image_size is not None else None,
            mean=as_tuple("mean"),
            std=as_tuple("std"),
            tokenizer=data.get("tokenizer"),
        )
