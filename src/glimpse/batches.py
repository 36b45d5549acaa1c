"""The typed batches that datamodules yield and tasks, models and metrics read.

Each batch kind is a name (a datamodule's ``KIND``, the ``kind`` of its
:class:`~glimpse.data.spec.DataSpec`, and what a task lists in ``ACCEPTS``) and a named tuple
of tensors that Lightning moves to the device as it is; text batches are plain
``(inputs (B, T), targets (B, T))`` pairs of character ids. They live here, beside no
datamodule, so that every layer may import them.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

#: Character ids and the ids that follow them, as ``(inputs, targets)`` pairs.
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


#: Sentences with their translations, as :class:`SentencePairs` batches.
SENTENCE_PAIRS = "sentence_pairs"


class SentencePairs(NamedTuple):
    """A batch of the :data:`SENTENCE_PAIRS` kind: ``B`` source sentences and ``R`` target
    sentences that translate them.

    A training batch holds one pair per row (``R == B``); an evaluation batch holds every
    translation of each source in the split, so ``R`` is their total.

    Attributes:
        sources: ``(B, S)`` int64 source token ids ``x_1 .. x_n <end>``, then ``<pad>`` (0) up
            to the longest source of the batch.
        source_lengths: ``(B,)`` int64 ids of each source, ``<end>`` included.
        targets: ``(R, T)`` int64 target ids ``<start> y_1 .. y_m <end>``, then ``<pad>``.
        target_lengths: ``(R,)`` int64 ids of each target, ``<start>`` and ``<end>`` included.
        target_source: ``(R,)`` int64 index into ``sources`` of each target's source.
        references: per source, its translations as read (the references of BLEU and chrF).
        texts: per source, the sentence as read.
    """

    sources: Tensor
    source_lengths: Tensor
    targets: Tensor
    target_lengths: Tensor
    target_source: Tensor
    references: tuple[tuple[str, ...], ...]
    texts: tuple[str, ...]
