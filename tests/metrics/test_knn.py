"""DINO's weighted kNN classifier against a brute-force per-query vote and DINO's own
``knn_classifier``, its chunking, normalisation and accuracy."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.testing import assert_close

from glimpse.metrics.knn import knn_accuracy, knn_classify

C = 5


def _features(seed: int, queries: int = 13, bank: int = 40, dim: int = 8):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(queries, dim, generator=generator),
        torch.randn(bank, dim, generator=generator),
        torch.randint(C, (bank,), generator=generator),
        torch.randint(C, (queries,), generator=generator),
    )


def brute_force_scores(query, bank, bank_labels, num_classes, k, temperature):
    """For each query alone: cosine to every bank row, the k largest, exp(s/T) summed per
    label."""
    scores = torch.zeros(len(query), num_classes, dtype=torch.float64)
    for q, row in enumerate(query.double()):
        similarities = [
            (float(row @ b / (row.norm() * b.norm())), int(label))
            for b, label in zip(bank.double(), bank_labels, strict=True)
        ]
        for similarity, label in sorted(similarities, reverse=True)[:k]:
            scores[q, label] += torch.tensor(similarity / temperature).exp()
    return scores


def dino_knn_classifier(train_features, train_labels, test_features, test_labels, k, T, classes):
    """DINO's eval_knn.knn_classifier (facebookresearch/dino) on normalised features, in one
    chunk: top-1 and top-5 in percent."""
    similarity = test_features @ train_features.t()
    distances, indices = similarity.topk(k, largest=True, sorted=True)
    retrieved = torch.gather(train_labels.view(1, -1).expand(len(test_features), -1), 1, indices)
    one_hot = torch.zeros(len(test_features) * k, classes).scatter_(1, retrieved.view(-1, 1), 1)
    probs = (one_hot.view(len(test_features), -1, classes) * (distances / T).exp()[..., None]).sum(
        1
    )
    correct = probs.sort(1, True)[1].eq(test_labels.view(-1, 1))
    top1 = correct.narrow(1, 0, 1).sum().item() * 100.0 / len(test_labels)
    top5 = correct.narrow(1, 0, min(5, k)).sum().item() * 100.0 / len(test_labels)
    return top1, top5


@pytest.mark.parametrize("k", [1, 5, 20])
def test_scores_equal_a_brute_force_vote(k):
    query, bank, bank_labels, _ = _features(k)
    ours = knn_classify(query, bank, bank_labels, C, k=k, temperature=0.07)
    reference = brute_force_scores(query, bank, bank_labels, C, k, 0.07)
    assert ours.shape == (13, C) and ours.dtype == torch.float32
    assert_close(ours.double(), reference, rtol=1e-5, atol=1e-5)


def test_accuracy_equals_dinos_knn_classifier():
    query, bank, bank_labels, query_labels = _features(3, queries=50, bank=200, dim=6)
    # Labels that follow the features a little, so the accuracy is not just chance.
    bank_labels = (bank[:, 0] > 0).long() * 2 + (bank[:, 1] > 0).long()
    query_labels = (query[:, 0] > 0).long() * 2 + (query[:, 1] > 0).long()
    accuracy = knn_accuracy(query, query_labels, bank, bank_labels, C, k=20, temperature=0.07)
    top1, top5 = dino_knn_classifier(
        F.normalize(bank, dim=1),
        bank_labels,
        F.normalize(query, dim=1),
        query_labels,
        20,
        0.07,
        C,
    )
    assert accuracy["acc1"] * 100 == pytest.approx(top1)
    assert accuracy["acc5"] * 100 == pytest.approx(top5)
    assert accuracy["acc1"] > 0.5


def test_chunks_give_the_same_scores():
    query, bank, bank_labels, _ = _features(1, queries=29)
    whole = knn_classify(query, bank, bank_labels, C, k=7)
    for chunk in (1, 4, 28, 1000):
        ours = knn_classify(query, bank, bank_labels, C, k=7, chunk=chunk)
        assert_close(ours, whole, rtol=1e-5, atol=0)  # exp(s / 0.07) reaches 1.6e6


def test_features_are_l2_normalised_so_their_scale_does_not_matter():
    query, bank, bank_labels, _ = _features(2)
    scaled = knn_classify(3.0 * query, bank * (torch.rand(40, 1) + 0.1), bank_labels, C, k=10)
    direction = bank / bank.norm(dim=1, keepdim=True)
    assert_close(scaled, knn_classify(query, direction, bank_labels, C, k=10), rtol=1e-5, atol=0)


def test_a_bank_smaller_than_k_uses_every_row():
    query, bank, bank_labels, _ = _features(4, bank=6)
    ours = knn_classify(query, bank, bank_labels, C, k=20, temperature=0.5)
    reference = brute_force_scores(query, bank, bank_labels, C, 6, 0.5)
    assert_close(ours.double(), reference, rtol=1e-5, atol=1e-5)


def test_accuracy_by_hand_with_fewer_classes_than_top5():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    bank_labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[1.0, 0.05], [0.05, 1.0], [1.0, 0.0]])
    query_labels = torch.tensor([0, 1, 1])
    accuracy = knn_accuracy(query, query_labels, bank, bank_labels, 2, k=2)
    assert accuracy == {"acc1": pytest.approx(2 / 3), "acc5": pytest.approx(1.0)}


def test_errors_name_the_mismatch():
    query, bank, bank_labels, query_labels = _features(0)
    with pytest.raises(ValueError, match="one width"):
        knn_classify(query[:, :4], bank, bank_labels, C)
    with pytest.raises(ValueError, match="one label per row"):
        knn_classify(query, bank, bank_labels[:-1], C)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        knn_classify(query, bank, bank_labels, 3)
    with pytest.raises(ValueError, match="k >= 1"):
        knn_classify(query, bank, bank_labels, C, k=0)
    with pytest.raises(ValueError, match="one label per query"):
        knn_accuracy(query, query_labels[:-1], bank, bank_labels, C)
