"""DINO's weighted k-nearest-neighbour classifier on frozen features (Wu et al. 2018; Caron et
al. 2021, sec. 4.1 and ``knn_classifier`` in its ``eval_knn.py``).

Query and bank features are L2-normalised, so their dot product is the cosine similarity
``s``. Each query's ``k`` most similar bank features vote for their labels with weight
``exp(s / T)``; the class scores are the sums of the votes (k=20, T=0.07 in DINO).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F


@torch.no_grad()
def knn_classify(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> Tensor:
    """Class scores of the weighted kNN vote: ``query (Q, D)``, ``bank (N, D)``, ``bank_labels
    (N,)`` int in ``[0, num_classes)`` -> ``scores (Q, num_classes)``, float32 on the query's
    device.

    ``scores[q, c] = sum over the min(k, N) nearest bank rows j of q with label c of
    exp(cos(q, b_j) / temperature)``. Both sets are L2-normalised here. The queries are
    processed ``chunk`` at a time, so memory is ``O(chunk * N)``.
    """
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(
            f"knn_classify needs query (Q, D) and bank (N, D) features of one width, got "
            f"{tuple(query.shape)} and {tuple(bank.shape)}."
        )
    if bank_labels.shape != (bank.shape[0],) or bank.shape[0] == 0:
        raise ValueError(
            f"knn_classify needs a non-empty bank with one label per row, got {bank.shape[0]} "
            f"rows and labels of shape {tuple(bank_labels.shape)}."
        )
    if k < 1 or temperature <= 0 or chunk < 1:
        raise ValueError(
            f"knn_classify needs k >= 1, temperature > 0 and chunk >= 1, got k={k}, "
            f"temperature={temperature}, chunk={chunk}."
        )
    device = query.device
    with torch.autocast(device.type, enabled=False):
        bank = F.normalize(bank.to(device, torch.float32), dim=1)
        labels = bank_labels.to(device, torch.long)
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"The bank's labels must lie in [0, {num_classes}).")
        neighbours = min(k, bank.shape[0])
        scores = []
        for start in range(0, query.shape[0], chunk):
            part = F.normalize(query[start : start + chunk].float(), dim=1)
            similarity, index = (part @ bank.T).topk(neighbours, dim=1)
            votes = torch.zeros(part.shape[0], num_classes, device=device)
            scores.append(votes.scatter_add_(1, labels[index], (similarity / temperature).exp()))
    return torch.cat(scores) if scores else torch.zeros(0, num_classes, device=device)


@torch.no_grad()
def knn_accuracy(
    query: Tensor,
    query_labels: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    topk: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Top-``t`` accuracy of :func:`knn_classify` for each ``t`` in ``topk``: ``{"acc1": ...,
    "acc5": ...}``, fractions in ``[0, 1]``. A query counts as right when its label is among
    the ``min(t, num_classes)`` highest scores (ties broken by ``torch.topk``)."""
    if query_labels.shape != (query.shape[0],) or query.shape[0] == 0:
        raise ValueError(
            f"knn_accuracy needs at least one query and one label per query, got "
            f"{query.shape[0]} queries and labels of shape {tuple(query_labels.shape)}."
        )
    scores = knn_classify(query, bank, bank_labels, num_classes, k, temperature)
    ranked = scores.topk(min(max(topk), num_classes), dim=1).indices
    hits = ranked == query_labels.to(ranked.device).view(-1, 1)
    return {
        f"acc{t}": hits[:, : min(t, num_classes)].any(dim=1).float().mean().item() for t in topk
    }
