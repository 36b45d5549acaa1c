"""The DataSpec: what a datamodule yields, recorded so a checkpoint can rebuild its task.

A task is constructed with ``spec.to_dict()`` and stores it in its hyperparameters, so the
vocabulary, class names and normalisation travel inside every checkpoint as plain Python
values (loadable with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from torch import Tensor

#: Batch kinds. Each datamodule declares one as ``KIND``; each task lists those it accepts.
TEXT = "text"
#: Images with one class label each, as :class:`LabelledImages` batches.
LABELLED_IMAGES = "labelled_images"


class LabelledImages(NamedTuple):
    """A batch of the :data:`LABELLED_IMAGES` kind.

    Attributes:
        images: ``(B, 3, H, W)`` float32, normalised with the spec's ``mean`` and ``std``.
        labels: ``(B,)`` int64 class indices into the spec's ``class_names``.
    """

    images: Tensor
    labels: Tensor


#: DataSpec fields that describe images; None for other kinds of data.
IMAGE_FIELDS = ("class_names", "image_size", "mean", "std")


@dataclass(frozen=True)
class DataSpec:
    """Description of a datamodule's batches.

    Attributes:
        kind: the batch kind, e.g. :data:`TEXT` for character streams.
        vocab: for text, the symbols in index order; index 0 is the unknown symbol.
        metadata: provenance and batching facts worth keeping (corpus name, size, hash).
        class_names: for labelled images, the human-readable name of each class, in label
            order.
        image_size: the side of the square images a model receives, in pixels.
        mean, std: the per-channel (RGB) normalisation applied to images in [0, 1].

    Checkpoints written before a field existed load with that field None.
    """

    kind: str
    vocab: tuple[str, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists, strings and numbers. The image fields are left out when None,
        so a text spec's dict (and the checkpoints holding it) is what it was before they
        existed."""
        data = asdict(self)
        for name in ("vocab", *IMAGE_FIELDS):
            value = data[name]
            data[name] = list(value) if isinstance(value, tuple) else value
        return {k: v for k, v in data.items() if k not in IMAGE_FIELDS or v is not None}

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
        )
