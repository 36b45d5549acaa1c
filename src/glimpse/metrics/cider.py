"""CIDEr-D (Vedantam, Zitnick and Parikh, "CIDEr: Consensus-based Image Description Evaluation",
CVPR 2015), the variant the coco-caption toolkit (``pycocoevalcap``) reports as "CIDEr".

In a corpus of ``N`` images, each with a candidate ``c`` and references ``S = (s_1 .. s_m)``
(sentences of space-separated words), every sentence ``s`` becomes, for each n-gram size
``n = 1..4``, a tf-idf vector

    g_n(s)[w] = tf(w, s) * log(N / max(1, df(w)))

where ``df(w)`` counts the images whose reference set holds the n-gram ``w`` (references only,
never candidates). Then

    CIDEr_n(c, S) = 10 / m * sum_j exp(-(l(c) - l(s_j))^2 / (2 sigma^2))
                    * sum_w min(g_n(c)[w], g_n(s_j)[w]) g_n(s_j)[w] / (|g_n(c)| |g_n(s_j)|)

(the clipped cosine similarity with a Gaussian length penalty, ``sigma = 6``), the image's
score is ``CIDEr-D = mean_n CIDEr_n`` and the corpus score the mean over images. A pair with a
zero-norm vector contributes 0. As in coco-caption, the length ``l(s)`` of a sentence is its
number of bigrams, ``max(words - 1, 0)``; for non-empty sentences the difference of lengths is
the difference of word counts.

:class:`CIDErD` is the same score as a ``torchmetrics`` metric that accumulates the strings of
an evaluation pass.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from glimpse.metrics.object_lists import ObjectListMetric

NGram = tuple[str, ...]


def _ngram_counts(sentence: str, max_n: int) -> Counter[NGram]:
    """Counts of every n-gram (``n = 1..max_n``) of a sentence split on white space."""
    words = sentence.split()
    return Counter(
        tuple(words[start : start + n])
        for n in range(1, max_n + 1)
        for start in range(len(words) - n + 1)
    )


def _tfidf(
    counts: Counter[NGram], document_frequency: Counter[NGram], log_images: float, max_n: int
) -> tuple[dict[NGram, float], list[float]]:
    """The tf-idf weights ``g_n(s)[w]`` of a sentence's n-grams and the norms ``|g_n(s)|`` per
    n-gram size (index ``n - 1``)."""
    weights = {
        ngram: count * (log_images - math.log(max(1.0, document_frequency[ngram])))
        for ngram, count in counts.items()
    }
    squares = [0.0] * max_n
    for ngram, weight in weights.items():
        squares[len(ngram) - 1] += weight * weight
    return weights, [math.sqrt(square) for square in squares]


def cider_d(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    max_n: int = 4,
    sigma: float = 6.0,
) -> tuple[float, list[float]]:
    """CIDEr-D of a corpus (see the module docstring for the equations).

    Args:
        candidates: one generated sentence per image, lower-case words joined by spaces.
        references: per image, its (at least one) reference sentences, tokenised the same way.
        max_n: the largest n-gram size.
        sigma: the standard deviation of the Gaussian length penalty.

    Returns:
        The corpus score (the mean over images) and the score of every image, in order.
    """
    if len(candidates) != len(references):
        raise ValueError(
            f"CIDEr-D got {len(candidates)} candidates but {len(references)} reference sets; "
            "pass one reference set per candidate."
        )
    if not candidates:
        raise ValueError("CIDEr-D needs at least one candidate; evaluate a non-empty corpus.")
    empty = [index for index, refs in enumerate(references) if len(refs) == 0]
    if empty:
        raise ValueError(f"Image {empty[0]} has no reference sentence; give every image one.")
    reference_counts = [[_ngram_counts(ref, max_n) for ref in refs] for refs in references]
    document_frequency: Counter[NGram] = Counter()
    for counts in reference_counts:
        document_frequency.update(set().union(*counts))
    log_images = math.log(len(candidates))

    def vector(sentence_counts: Counter[NGram]) -> tuple[dict[NGram, float], list[float], int]:
        weights, norms = _tfidf(sentence_counts, document_frequency, log_images, max_n)
        bigrams = sum(count for ngram, count in sentence_counts.items() if len(ngram) == 2)
        return weights, norms, bigrams

    scores = []
    for candidate, refs in zip(candidates, reference_counts, strict=True):
        weights, norms, length = vector(_ngram_counts(candidate, max_n))
        total = 0.0
        for ref in refs:
            ref_weights, ref_norms, ref_length = vector(ref)
            similarity = [0.0] * max_n
            for ngram, weight in weights.items():
                ref_weight = ref_weights.get(ngram, 0.0)
                similarity[len(ngram) - 1] += min(weight, ref_weight) * ref_weight
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * sigma**2))
            for n in range(max_n):
                if norms[n] != 0 and ref_norms[n] != 0:
                    total += similarity[n] / (norms[n] * ref_norms[n]) * penalty
        scores.append(10.0 * total / (max_n * len(refs)))
    return sum(scores) / len(scores), scores


class CIDErD(ObjectListMetric):
    """Corpus CIDEr-D (:func:`cider_d`) over every ``update`` since the last ``reset``.

    The state is two Python lists (candidate strings and reference tuples). Under
    ``torch.distributed``, :meth:`compute` gathers them from every rank with
    ``all_gather_object`` (rank order, :class:`~glimpse.metrics.object_lists.ObjectListMetric`),
    so each rank scores the whole corpus; a sampler that pads the last batch with repeated
    images counts those images twice (in the mean and in the document frequencies).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    OBJECT_STATES = ("candidates", "references")

    candidates: list[str]
    references: list[tuple[str, ...]]

    def update(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """Add generated sentences and, per sentence, its reference sentences."""
        if len(candidates) != len(references):
            raise ValueError(
                f"CIDErD.update got {len(candidates)} candidates but {len(references)} "
                "reference sets; pass one reference set per candidate."
            )
        self.candidates.extend(candidates)
        self.references.extend(tuple(refs) for refs in references)

    def compute(self) -> Tensor:
        """The corpus score, a scalar tensor."""
        score, _ = cider_d(self.candidates, self.references)
        return torch.tensor(score, dtype=self.dtype, device=self.device)
