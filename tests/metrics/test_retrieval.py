"""Image-text retrieval recall@K against a brute-force ranking."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from glimpse.metrics.retrieval import (
    first_of_each_image,
    image_to_text_ranks,
    pair_recalls,
    retrieval_recalls,
    text_to_image_ranks,
)


def _brute_force(similarity: torch.Tensor, text_image: list[int], ks) -> dict[str, float]:
    num_images, num_texts = similarity.shape
    results = {}
    for k in ks:
        hits = 0
        for i in range(num_images):
            order = sorted(range(num_texts), key=lambda j: -similarity[i, j].item())
            hits += any(text_image[j] == i for j in order[:k])
        results[f"i2t_recall{k}"] = hits / num_images
    for k in ks:
        hits = 0
        for j in range(num_texts):
            order = sorted(range(num_images), key=lambda i: -similarity[i, j].item())
            hits += text_image[j] in order[:k]
        results[f"t2i_recall{k}"] = hits / num_texts
    results["recall_mean"] = sum(results.values()) / len(results)
    return results


def _data(num_images: int = 23, dim: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    captions = torch.randint(1, 4, (num_images,), generator=generator)  # 1 to 3 per image
    text_image = torch.repeat_interleave(torch.arange(num_images), captions)
    text_image = text_image[torch.randperm(len(text_image), generator=generator)]
    images = F.normalize(torch.randn(num_images, dim, generator=generator), dim=-1)
    # Noisy copies of their image: retrieval is far from perfect and far from chance.
    texts = images[text_image] + 0.6 * torch.randn(len(text_image), dim, generator=generator)
    return images, F.normalize(texts, dim=-1), text_image


@pytest.mark.parametrize("chunk", [1024, 5])
def test_recalls_equal_brute_force_with_several_captions_per_image(chunk):
    images, texts, text_image = _data()
    ks = (1, 5, 10)
    ours = retrieval_recalls(images, texts, text_image, ks, chunk=chunk)
    expected = _brute_force(images @ texts.T, text_image.tolist(), ks)
    assert ours == pytest.approx(expected)
    assert 0.2 < ours["i2t_recall1"] < ours["i2t_recall5"] < ours["i2t_recall10"] < 1
    assert 0.2 < ours["t2i_recall1"] < ours["t2i_recall5"] < ours["t2i_recall10"] < 1


def test_ranks_count_only_candidates_scored_strictly_higher():
    similarity = torch.tensor([[0.9, 0.5, 0.9], [0.1, 0.5, 0.2]])
    text_image = torch.tensor([0, 1, 1])
    assert image_to_text_ranks(similarity, text_image).tolist() == [0, 0]
    # Text 2 of image 1 scores 0.2 against its image and 0.9 against image 0: rank 1.
    assert text_to_image_ranks(similarity, text_image).tolist() == [0, 0, 1]


def test_an_image_without_captions_is_never_a_hit():
    similarity = torch.tensor([[0.9, 0.5], [0.1, 0.8], [1.0, 1.0]])
    ranks = image_to_text_ranks(similarity, torch.tensor([0, 1]))
    assert ranks.tolist() == [0, 0, 2]


def test_text_image_indices_outside_the_images_are_refused():
    images, texts, text_image = _data(num_images=4)
    with pytest.raises(ValueError, match="outside the 3 images"):
        retrieval_recalls(images[:3], texts, text_image)


def test_first_of_each_image_maps_texts_to_distinct_images():
    first, text_image = first_of_each_image(torch.tensor([7, 3, 7, 5, 3]))
    assert first.tolist() == [1, 3, 0] and text_image.tolist() == [2, 0, 2, 1, 0]


def test_pairs_as_a_loader_yields_them_score_each_image_once():
    images, texts, text_image = _data()
    image_ids = 100 + 3 * text_image  # a split's own ids, one per pair, in the pairs' order
    ours = pair_recalls(images[text_image], texts, image_ids, (1, 5))
    assert ours == pytest.approx(_brute_force(images @ texts.T, text_image.tolist(), (1, 5)))
