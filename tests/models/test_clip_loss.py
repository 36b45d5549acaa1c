"""CLIP's symmetric InfoNCE: a hand-computed case, symmetry, open_clip's loss, the gather."""

from __future__ import annotations

import math

import pytest
import torch
from open_clip.loss import ClipLoss
from torch.nn import functional as F

from glimpse.models.clip_loss import clip_logits, clip_loss, gather_with_grad


def test_loss_equals_a_hand_computed_case():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    scale = torch.tensor(2.0)
    # logits = 2 * I T^T = [[1.2, 0], [1.6, 2]]; rows pick captions, columns pick images.
    image_terms = [
        -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(0.0))),
        -math.log(math.exp(2.0) / (math.exp(1.6) + math.exp(2.0))),
    ]
    text_terms = [
        -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6))),
        -math.log(math.exp(2.0) / (math.exp(0.0) + math.exp(2.0))),
    ]
    expected = (sum(image_terms) / 2 + sum(text_terms) / 2) / 2
    assert clip_loss(images, texts, scale).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(
        clip_logits(images, texts, scale), torch.tensor([[1.2, 0], [1.6, 2]])
    )


def _pairs(n: int = 8, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    return images, texts


def test_loss_is_symmetric_in_images_and_texts():
    images, texts = _pairs()
    scale = torch.tensor(14.3)
    torch.testing.assert_close(clip_loss(images, texts, scale), clip_loss(texts, images, scale))


def test_loss_equals_open_clip_and_its_gradients():
    images, texts = _pairs(seed=1)
    images.requires_grad_(True)
    texts.requires_grad_(True)
    scale = torch.tensor(1 / 0.07, requires_grad=True)
    ours = clip_loss(images, texts, scale)
    reference = ClipLoss()(images, texts, scale)
    torch.testing.assert_close(ours, reference)
    ours_grads = torch.autograd.grad(ours, (images, texts, scale))
    reference_grads = torch.autograd.grad(reference, (images, texts, scale))
    for mine, theirs in zip(ours_grads, reference_grads, strict=True):
        torch.testing.assert_close(mine, theirs)


def test_aligned_pairs_at_a_large_scale_have_almost_no_loss_and_a_shuffle_costs():
    images, _ = _pairs(n=6, dim=32)
    scale = torch.tensor(100.0)
    assert clip_loss(images, images, scale).item() < 1e-3
    assert clip_loss(images, images.roll(1, dims=0), scale).item() > 10


def test_without_a_process_group_gathering_is_the_identity():
    images, _ = _pairs()
    assert gather_with_grad(images) is images


def test_mismatched_embeddings_are_refused():
    images, texts = _pairs()
    with pytest.raises(ValueError, match="one shape"):
        clip_loss(images, texts[:-1], torch.tensor(1.0))
