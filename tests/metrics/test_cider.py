"""CIDEr-D: agreement with coco-caption's scorer, hand-checkable values, the torchmetrics
wrapper's update/compute/reset, device moves and its distributed gather."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from pycocoevalcap.cider.cider import Cider

from glimpse.metrics import CIDErD, cider_d

WORDS = [
    *("a", "the", "dog", "cat", "man", "runs", "sits", "on"),
    *("in", "grass", "red", "ball", "with", "park", "two"),
]


def random_corpus(seed: int, images: int, max_refs: int) -> tuple[list[str], list[list[str]]]:
    """Captions over a small vocabulary (so n-grams repeat across images), 1..max_refs
    references per image, including empty and one-word sentences; half the candidates are a
    reference with a word replaced, the others random."""
    rng = random.Random(seed)

    def sentence() -> str:
        length = rng.choice([0, 1, 2] + list(range(3, 14)) * 3)
        return " ".join(rng.choice(WORDS) for _ in range(length))

    candidates, references = [], []
    for _ in range(images):
        refs = [sentence() for _ in range(rng.randint(1, max_refs))]
        candidate = rng.choice(refs).split()
        if candidate and rng.random() < 0.5:
            candidate[rng.randrange(len(candidate))] = rng.choice(WORDS)
            candidates.append(" ".join(candidate))
        else:
            candidates.append(sentence())
        references.append(refs)
    return candidates, references


def coco_cider(candidates: list[str], references: list[list[str]]) -> tuple[float, list[float]]:
    gts = {index: list(refs) for index, refs in enumerate(references)}
    res = {index: [candidate] for index, candidate in enumerate(candidates)}
    score, scores = Cider().compute_score(gts, res)
    return float(score), [float(s) for s in scores]


@pytest.mark.parametrize(
    ("seed", "images", "max_refs"), [(0, 40, 5), (1, 25, 1), (2, 60, 3), (3, 2, 7), (4, 1, 4)]
)
def test_cider_d_equals_pycocoevalcap(seed: int, images: int, max_refs: int):
    candidates, references = random_corpus(seed, images, max_refs)
    expected, expected_per_image = coco_cider(candidates, references)
    score, per_image = cider_d(candidates, references)
    assert score == pytest.approx(expected, rel=0, abs=1e-9)
    assert per_image == pytest.approx(expected_per_image, rel=0, abs=1e-9)
    if images > 1:
        assert max(per_image) > 0.5  # the corpus exercises matching n-grams, not only zeros


def test_candidate_equal_to_every_reference_scores_ten_per_ngram_size_present():
    """Identical candidate and references have cosine 1 and no length penalty for every n-gram
    size with a non-zero tf-idf vector: 10 with four or more words; a three-word sentence has no
    4-grams, so (1 + 1 + 1 + 0) / 4 * 10 = 7.5."""
    captions = ["a dog runs on the grass", "a cat sits on a red mat", "two men talk"]
    score, per_image = cider_d(captions, [[caption, caption] for caption in captions])
    assert per_image == pytest.approx([10.0, 10.0, 7.5], abs=1e-12)
    assert score == pytest.approx(27.5 / 3, abs=1e-12)


def test_candidate_sharing_no_ngram_scores_zero():
    _, per_image = cider_d(
        ["purple elephants fly", "a cat sits on a red mat"],
        [["a dog runs on the grass", "the dog runs"], ["a cat sits on a red mat"]],
    )
    assert per_image[0] == 0.0
    assert per_image[1] == pytest.approx(10.0)


def test_cider_d_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="2 candidates but 1 reference sets"):
        cider_d(["a b", "c d"], [["a b"]])
    with pytest.raises(ValueError, match="at least one candidate"):
        cider_d([], [])
    with pytest.raises(ValueError, match="Image 1 has no reference"):
        cider_d(["a b", "c d"], [["a b"], []])


def test_metric_accumulates_updates_and_resets():
    candidates, references = random_corpus(5, 30, 5)
    metric = CIDErD()
    metric.update(candidates[:12], references[:12])
    metric.update(candidates[12:], references[12:])
    expected, _ = cider_d(candidates, references)
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)
    metric.reset()
    assert metric.candidates == [] and metric.references == []
    metric.update(candidates[:10], references[:10])
    assert metric.compute().item() == pytest.approx(cider_d(candidates[:10], references[:10])[0])


def test_metric_moves_between_devices_with_string_states():
    metric = CIDErD()
    metric.update(["a dog runs"], [["a dog runs", "the dog runs"]])
    metric.to("cpu")
    metric.to(torch.float64)
    assert metric.candidates == ["a dog runs"]
    assert metric.references == [("a dog runs", "the dog runs")]


def test_metric_gathers_strings_through_a_process_group(tmp_path: Path):
    """A one-rank gloo group takes the ``all_gather_object`` path of ``compute``; the result
    is the local corpus and the local state is restored after the sync."""
    candidates, references = random_corpus(6, 12, 3)
    metric = CIDErD()
    metric.update(candidates, references)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        score = metric.compute().item()
        assert metric._is_synced is False
    finally:
        dist.destroy_process_group()
    assert score == pytest.approx(cider_d(candidates, references)[0], rel=1e-6)
    assert metric.candidates == candidates
