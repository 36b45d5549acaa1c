"""Image-text retrieval recall@K, with several captions per image (Flickr8k, COCO).

For ``I`` images and ``T`` texts, where text ``j`` describes image ``text_image[j]``:

* image -> text: image ``i`` is a hit at ``K`` when any of its captions is among the ``K``
  texts most similar to it; its rank is that of its best-ranked caption.
* text -> image: text ``j`` is a hit at ``K`` when its image is among the ``K`` images most
  similar to it.

A rank is the number of candidates scored strictly higher than the true one (0 is first), so
ties count in the query's favour. Recall@K is the fraction of queries with rank < K (as in
Karpathy & Fei-Fei 2015 and CLIP's table 13). Similarities are computed in chunks of
queries, so the full ``(I, T)`` matrix need never be held at once. :func:`pair_recalls` takes
a split's pairs as they come (an image id per pair) and scores each distinct image once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _check(num_images: int, text_image: Tensor) -> None:
    if text_image.ndim != 1 or text_image.numel() == 0:
        raise ValueError(
            f"text_image must be a non-empty (T,) tensor, not {tuple(text_image.shape)}."
        )
    if int(text_image.min()) < 0 or int(text_image.max()) >= num_images:
        raise ValueError(
            f"text_image holds image indices from {int(text_image.min())} to "
            f"{int(text_image.max())}, outside the {num_images} images."
        )


def image_to_text_ranks(similarity: Tensor, text_image: Tensor, first_image: int = 0) -> Tensor:
    """Rank ``(c,)`` of each image's best-ranked caption among all ``T`` texts.

    Args:
        similarity: ``(c, T)`` similarities of images ``first_image .. first_image + c - 1``
            (a chunk of the images, or all of them) to every text.
        text_image: ``(T,)`` the image index of each text; texts of images outside the chunk
            are only candidates.
        first_image: the index of the chunk's first image.

    An image without captions gets rank ``T`` (never a hit).
    """
    num_rows, num_texts = similarity.shape
    rows = text_image.to(similarity.device) - first_image
    mine = (rows >= 0) & (rows < num_rows)
    columns = torch.arange(num_texts, device=similarity.device)[mine]
    best = similarity.new_full((num_rows,), float("-inf"))
    best = best.scatter_reduce(0, rows[mine], similarity[rows[mine], columns], "amax")
    ranks = (similarity > best[:, None]).sum(dim=1)
    return torch.where(torch.isinf(best), torch.full_like(ranks, num_texts), ranks)


def text_to_image_ranks(similarity: Tensor, text_image: Tensor) -> Tensor:
    """Rank ``(T,)`` of each text's image among all images, from similarities ``(I, T)`` and
    the image index ``(T,)`` of each text."""
    num_images, num_texts = similarity.shape
    _check(num_images, text_image)
    rows = text_image.to(similarity.device)
    true = similarity[rows, torch.arange(num_texts, device=similarity.device)]
    return (similarity > true[None, :]).sum(dim=0)


def recall_at_k(ranks: Tensor, ks: Sequence[int]) -> dict[int, float]:
    """``{K: fraction of ranks < K}`` for each K of ``ks``."""
    return {int(k): float((ranks < k).float().mean()) for k in ks}


@torch.no_grad()
def retrieval_recalls(
    image_emb: Tensor,
    text_emb: Tensor,
    text_image: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 1024,
) -> dict[str, float]:
    """Recall@K in both directions from embeddings.

    Args:
        image_emb: ``(I, E)`` L2-normalised embeddings of the distinct images.
        text_emb: ``(T, E)`` L2-normalised embeddings of the texts.
        text_image: ``(T,)`` int64 index into ``image_emb`` of each text's image.
        ks: the K of each recall.
        chunk: queries scored at once (memory ``chunk × max(I, T)`` similarities).

    Returns:
        ``{"i2t_recall{K}": ..., "t2i_recall{K}": ..., "recall_mean": ...}``, fractions in
        [0, 1]; ``recall_mean`` is the mean of all of them (open_clip's "mean recall").
    """
    image_emb, text_emb = image_emb.float(), text_emb.float()
    text_image = text_image.to(image_emb.device).long()
    _check(image_emb.shape[0], text_image)
    i2t, t2i = [], []
    for start in range(0, image_emb.shape[0], chunk):
        similarity = image_emb[start : start + chunk] @ text_emb.T
        i2t.append(image_to_text_ranks(similarity, text_image, first_image=start))
    for start in range(0, text_emb.shape[0], chunk):
        similarity = image_emb @ text_emb[start : start + chunk].T
        t2i.append(text_to_image_ranks(similarity, text_image[start : start + chunk]))
    results = {}
    for name, ranks in (("i2t", torch.cat(i2t)), ("t2i", torch.cat(t2i))):
        for k, value in recall_at_k(ranks, ks).items():
            results[f"{name}_recall{k}"] = value
    results["recall_mean"] = sum(results.values()) / len(results)
    return results


def first_of_each_image(image_ids: Tensor) -> tuple[Tensor, Tensor]:
    """``image_ids (T,)`` of a split's pairs -> ``(first (I,), text_image (T,))``: for each of
    the ``I`` distinct ids (ascending), the index of its first pair, and for each pair, its
    image's index among the distinct ids."""
    unique, text_image = torch.unique(image_ids, return_inverse=True)
    order = torch.arange(len(image_ids), device=image_ids.device)
    first = torch.full((len(unique),), len(image_ids), device=image_ids.device)
    first = first.scatter_reduce(0, text_image, order, "amin")
    return first, text_image


def pair_recalls(
    image_emb: Tensor, text_emb: Tensor, image_ids: Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """:func:`retrieval_recalls` of a split's pairs: row ``j`` of ``image_emb (T, E)`` and
    ``text_emb (T, E)`` is pair ``j``, whose image is ``image_ids[j]``; each distinct image is
    one candidate (the embedding of its first pair), each text one query."""
    first, text_image = first_of_each_image(image_ids)
    return retrieval_recalls(image_emb[first], text_emb, text_image, ks)
