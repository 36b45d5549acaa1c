"""Attention rollout against a per-sample NumPy loop, and the ViT's class-token map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glimpse.models.attention_rollout import attention_rollout
from glimpse.models.vit import vit_test


def _random_attention(batch: int, heads: int, tokens: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, heads, tokens, tokens, generator=generator).softmax(dim=-1)


def _brute_force(layers: list[np.ndarray], weight: float) -> np.ndarray:
    """One sample: layers of (heads, N, N) -> (N, N)."""
    tokens = layers[0].shape[-1]
    result = np.eye(tokens)
    for attention in layers:
        mixed = weight * np.eye(tokens) + (1 - weight) * attention.mean(axis=0)
        mixed = mixed / mixed.sum(axis=1, keepdims=True)
        result = mixed @ result
    return result


@pytest.mark.parametrize("weight", [0.0, 0.5, 0.9])
def test_rollout_equals_a_loop_over_layers(weight):
    layers = [_random_attention(3, 4, 6, seed) for seed in range(4)]
    rollout = attention_rollout(layers, residual_weight=weight)
    for sample in range(3):
        expected = _brute_force([layer[sample].double().numpy() for layer in layers], weight)
        np.testing.assert_allclose(rollout[sample].numpy(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(3, 6))


def test_one_layer_without_residual_is_the_head_mean():
    layer = _random_attention(2, 3, 5, seed=0)
    torch.testing.assert_close(attention_rollout([layer], residual_weight=0.0), layer.mean(1))


def test_rollout_refuses_no_layers_and_bad_weights():
    with pytest.raises(ValueError, match="at least one layer"):
        attention_rollout([])
    with pytest.raises(ValueError, match="residual_weight"):
        attention_rollout([_random_attention(1, 1, 2, 0)], residual_weight=1.5)


def test_vit_class_token_rollout_is_the_class_row_over_the_patch_grid():
    torch.manual_seed(0)
    model = vit_test().eval()
    images = torch.randn(2, 3, 32, 48)
    maps = model.class_token_rollout(images)
    assert maps.shape == (2, 8, 12)
    _, attentions = model.forward_features(images, return_attention=True)
    expected = attention_rollout(attentions)[:, 0, 1:].reshape(2, 8, 12)
    torch.testing.assert_close(maps, expected)
