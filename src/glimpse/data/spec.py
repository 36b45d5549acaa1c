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


#: Images with reference captions, as :class:`CaptionedImages` batches.
CAPTIONED_IMAGES = "captioned_images"


class CaptionedImages(NamedTuple):
    """A batch of the :data:`CAPTIONED_IMAGES` kind: ``B`` images and ``R`` captions of them.

    A training batch holds one caption per image (``R == B``); an evaluation batch holds every
    reference caption of each image, so ``R`` is their total.

    Attributes:
        images: ``(B, 3, H, W)`` float32 normalised with the spec's ``mean`` and ``std``, or,
            when the datamodule serves cached encoder features, the encoder's grid
            ``(B, N, D)`` (N = H'·W' positions of D channels).
        captions: ``(R, T)`` int64 word ids, ``<start> w_1 .. w_n <end>`` then ``<pad>`` (0)
            up to the longest caption of the batch.
        lengths: ``(R,)`` int64 number of ids of each caption, ``<start>`` and ``<end>``
            included.
        caption_image: ``(R,)`` int64 index into ``images`` of each caption's image.
        references: per image, its reference captions as lower-cased words joined by single
            spaces (the tokenizer's words, before ``<unk>`` mapping), for BLEU and CIDEr.
        names: per image, its file name.
    """

    images: Tensor
    captions: Tensor
    lengths: Tensor
    caption_image: Tensor
    references: tuple[tuple[str, ...], ...]
    names: tuple[str, ...]


#: Images with labelled boxes around their objects, as :class:`DetectionBatch` batches.
DETECTION = "detection"


class DetectionTarget(NamedTuple):
    """The objects of one image of a :data:`DETECTION` batch (``n`` may be 0).

    Attributes:
        boxes: ``(n, 4)`` float32 ``(cx, cy, w, h)``, each divided by the transformed image's
            own (unpadded) width or height, so in [0, 1].
        labels: ``(n,)`` int64 class indices into the spec's ``class_names``.
    """

    boxes: Tensor
    labels: Tensor


class DetectionBatch(NamedTuple):
    """A batch of the :data:`DETECTION` kind: ``B`` images of different sizes, zero-padded at
    the bottom and right to the largest height and width of the batch.

    Attributes:
        images: ``(B, 3, H, W)`` float32, normalised with the spec's ``mean`` and ``std``, then
            padded with zeros.
        mask: ``(B, H, W)`` bool, True on padding pixels (DETR's convention).
        targets: per image, its :class:`DetectionTarget`.
        image_ids: ``(B,)`` int64 the dataset's own image ids (COCO's ``image_id``).
        sizes: ``(B, 2)`` int64 ``(h, w)`` of each transformed image before padding.
        orig_sizes: ``(B, 2)`` int64 ``(h, w)`` of each image on disk, the pixel grid of its
            annotations.
    """

    images: Tensor
    mask: Tensor
    targets: tuple[DetectionTarget, ...]
    image_ids: Tensor
    sizes: Tensor
    orig_sizes: Tensor


#: Several augmented views of each image, for self-supervised learning, as
#: :class:`MultiViewImages` batches.
MULTI_VIEW_IMAGES = "multi_view_images"


class MultiViewImages(NamedTuple):
    """A training batch of the :data:`MULTI_VIEW_IMAGES` kind: ``V`` random views of ``B`` images.

    Attributes:
        views: ``V`` tensors ``(B, 3, S_v, S_v)`` float32, normalised with the spec's ``mean``
            and ``std``; the global views first (BYOL: two views of one size; DINO's multi-crop:
            two global crops, then the smaller local crops).
        labels: ``(B,)`` int64 class indices into the spec's ``class_names``. Only the online
            linear probe reads them; the self-supervised losses never do.
    """

    views: tuple[Tensor, ...]
    labels: Tensor


#: Images paired with a caption each, as :class:`ImageTextPairs` batches.
IMAGE_TEXT = "image_text"


class ImageTextPairs(NamedTuple):
    """A batch of the :data:`IMAGE_TEXT` kind: ``B`` (image, caption) pairs.

    Attributes:
        images: ``(B, 3, H, W)`` float32, normalised with the spec's ``mean`` and ``std``.
        tokens: ``(B, L)`` int64 token ids of the captions from the spec's tokenizer: start
            token, the caption's tokens, end token, then zeros up to the context length ``L``.
        texts: the captions as read from the data.
        image_ids: ``(B,)`` int64 index of each pair's image within its split; pairs that share
            an image (Flickr8k's five captions) share it, so retrieval counts any of an image's
            captions as a hit.
    """

    images: Tensor
    tokens: Tensor
    texts: tuple[str, ...]
    image_ids: Tensor


#: DataSpec fields that describe images; None for other kinds of data.
IMAGE_FIELDS = ("class_names", "image_size", "mean", "std")
#: DataSpec fields left out of :meth:`DataSpec.to_dict` when None, so older checkpoints' dicts
#: are unchanged.
OPTIONAL_FIELDS = (*IMAGE_FIELDS, "tokenizer")


@dataclass(frozen=True)
class DataSpec:
    """Description of a datamodule's batches.

    Attributes:
        kind: the batch kind, e.g. :data:`TEXT` for character streams.
        vocab: for text, the symbols in index order; index 0 is the unknown symbol. For
            captions, the :class:`~glimpse.data.word_tokenizer.WordTokenizer`'s words in id
            order (``<pad>``, ``<start>``, ``<end>``, ``<unk>`` first).
        metadata: provenance and batching facts worth keeping (corpus name, size, hash).
        class_names: for labelled images and detection, the human-readable name of each
            class, in label order.
        image_size: the side of the square images a model receives, in pixels; for
            detection, the longest side an image may have after resizing.
        mean, std: the per-channel (RGB) normalisation applied to images in [0, 1].
        tokenizer: for image-text pairs, the subword tokenizer as the plain dict it saves
            itself to (:mod:`glimpse.data.bpe`), so a checkpoint can tokenize new text.

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
