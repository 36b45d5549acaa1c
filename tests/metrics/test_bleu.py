"""BLEU-1..4 as the captioning task computes it (``torchmetrics.text.BLEUScore``, corpus BLEU
against every reference): a corpus worked out by hand, and agreement with coco-caption's
``Bleu`` (the numbers captioning papers report).

Where the two differ, and so what the agreement test avoids:

* Ties for the closest reference length: coco takes the shorter length, torchmetrics the first
  reference in the given order. Listing each image's references shortest first makes them pick
  the same length (see the last test).
* An n-gram size with no match in the whole corpus: torchmetrics returns exactly 0, coco
  ``(prod_k (correct_k + 1e-15) / (guess_k + 1e-9))^(1/n)``, a tiny positive number.
* coco adds 1e-15 and 1e-9 to every count ratio (and to ``c / r`` in the brevity penalty):
  relative changes of about 1e-9 / count. torchmetrics keeps its counts in float32 unless told
  otherwise (relative error about 1e-7), hence the float64 metric for the 1e-9 tolerance below.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from pycocoevalcap.bleu.bleu import Bleu
from torchmetrics.text import BLEUScore

CANDIDATES = ["the cat sat on the mat", "a dog runs fast"]
REFERENCES = [
    ["a cat is on the mat", "there is a cat on the mat"],
    ["a dog runs fast in the park", "the brown dog is running", "dog running"],
]


def torchmetrics_bleu(candidates, references, n: int, dtype=torch.float32) -> float:
    metric = BLEUScore(n_gram=n)
    metric.set_dtype(dtype)
    metric.update(candidates, references)
    return metric.compute().item()


def coco_bleu(candidates, references) -> list[float]:
    """coco-caption's corpus BLEU-1..4."""
    gts = {index: list(refs) for index, refs in enumerate(references)}
    res = {index: [candidate] for index, candidate in enumerate(candidates)}
    scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return scores


def test_bleu_of_a_hand_computed_corpus():
    """Clipped n-gram matches / candidate n-grams, summed over both sentences:

    sentence 1, "the cat sat on the mat" (6 words); the reference maxima clip "the" to 1:
        unigrams the 1 (of 2), cat, on, mat -> 4/6;  bigrams "on the", "the mat" -> 2/5;
        trigrams "on the mat" -> 1/4;  4-grams 0/3;  closest reference length 6.
    sentence 2, "a dog runs fast" (4 words), every n-gram in the first reference:
        4/4, 3/3, 2/2, 1/1;  reference lengths 7, 5, 2 -> closest 5.
    p1 = 8/10, p2 = 5/8, p3 = 3/6, p4 = 1/4;  c = 10 < r = 11 -> BP = exp(1 - 11/10).
    BLEU-n = BP * (p1 ... pn)^(1/n).
    """
    brevity = math.exp(1 - 11 / 10)
    expected = [
        brevity * 0.8,
        brevity * math.sqrt(0.8 * 0.625),  # sqrt(1/2)
        brevity * (0.8 * 0.625 * 0.5) ** (1 / 3),  # (1/4)^(1/3)
        brevity * (0.8 * 0.625 * 0.5 * 0.25) ** (1 / 4),  # 1/2
    ]
    for n in range(1, 5):
        assert torchmetrics_bleu(CANDIDATES, REFERENCES, n) == pytest.approx(expected[n - 1])
    assert coco_bleu(CANDIDATES, REFERENCES) == pytest.approx(expected, rel=1e-9)


def random_corpus(seed: int, images: int) -> tuple[list[str], list[list[str]]]:
    """Captions over a small vocabulary, 1..5 references per image listed shortest first;
    candidates are mostly references with a word replaced or dropped, so that every n-gram size
    has matches."""
    words = ["a", "the", "dog", "cat", "man", "runs", "sits", "on", "in", "grass", "red", "park"]
    rng = random.Random(seed)

    def sentence() -> list[str]:
        return [rng.choice(words) for _ in range(rng.randint(2, 14))]

    candidates, references = [], []
    for _ in range(images):
        refs = [sentence() for _ in range(rng.randint(1, 5))]
        candidate = list(rng.choice(refs)) if rng.random() < 0.7 else sentence()
        position = rng.randrange(len(candidate))
        if rng.random() < 0.5:
            candidate[position] = rng.choice(words)
        else:
            del candidate[position]
        candidates.append(" ".join(candidate))
        references.append([" ".join(ref) for ref in sorted(refs, key=len)])
    return candidates, references


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torchmetrics_bleu_agrees_with_coco_caption(seed: int):
    candidates, references = random_corpus(seed, images=80)
    expected = coco_bleu(candidates, references)
    assert min(expected) > 0.05  # every n-gram size has matches: no 0-versus-tiny difference
    for n in range(1, 5):
        # torchmetrics keeps its n-gram weights 1/n in float32: 1/3 is off by 1e-8.
        tolerance = 1e-7 if n == 3 else 1e-9
        assert torchmetrics_bleu(candidates, references, n, torch.float64) == pytest.approx(
            expected[n - 1], rel=0, abs=tolerance
        )
        assert torchmetrics_bleu(candidates, references, n) == pytest.approx(
            expected[n - 1], rel=1e-6
        )


def test_closest_reference_length_ties_differ_from_coco_caption():
    """A 4-word candidate with references of 5 and 3 words: torchmetrics takes the first (5,
    so a brevity penalty exp(1 - 5/4)), coco the shorter (3, no penalty)."""
    candidate = ["a dog runs fast"]
    references = [["a dog runs fast now", "a dog runs"]]
    assert torchmetrics_bleu(candidate, references, 1) == pytest.approx(math.exp(1 - 5 / 4))
    assert coco_bleu(candidate, references)[0] == pytest.approx(1.0)
    shortest_first = [sorted(references[0], key=len)]
    assert torchmetrics_bleu(candidate, shortest_first, 1) == pytest.approx(1.0)
