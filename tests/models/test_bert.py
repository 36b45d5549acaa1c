"""BERT: the 80/10/10 masking statistics, the encoder against torch.nn, the tied MLM head."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_parameters
from torch import nn
from torch.nn import functional as F
from torch.testing import assert_close

from glimpse.models.bert import IGNORE, Bert, mask_tokens

V, MASK = 40, 39


def test_masking_selects_15_percent_and_masks_replaces_or_keeps_them_80_10_10():
    """Measured on 400,000 positions (binomial standard errors below 0.1 %), the observable
    outcomes match BERT's rule: a random token equals the original 1 time in 38."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, MASK, (400, 1000), generator=gen)
    inputs, labels = mask_tokens(tokens, MASK, (1, MASK), generator=gen)
    selected = labels != IGNORE
    assert (labels[selected] == tokens[selected]).all()
    assert (inputs[~selected] == tokens[~selected]).all()
    chosen = inputs[selected]
    original = tokens[selected]
    masked = (chosen == MASK).float().mean().item()
    changed = ((chosen != MASK) & (chosen != original)).float().mean().item()
    kept = (chosen == original).float().mean().item()
    same_by_chance = 0.1 / (MASK - 1)
    assert selected.float().mean().item() == pytest.approx(0.15, abs=0.003)
    assert masked == pytest.approx(0.8, abs=0.005)
    assert changed == pytest.approx(0.1 - same_by_chance, abs=0.004)
    assert kept == pytest.approx(0.1 + same_by_chance, abs=0.004)
    replaced = chosen[(chosen != MASK) & (chosen != original)]
    assert replaced.min() >= 1 and replaced.max() < MASK
    counts = torch.bincount(replaced, minlength=MASK)[1:]
    assert counts.min() > 0.6 * counts.float().mean()  # every symbol can be drawn


def test_masking_is_reproducible_from_a_generator_and_checks_its_probabilities():
    tokens = torch.randint(1, MASK, (4, 50))
    first = mask_tokens(tokens, MASK, (1, MASK), generator=torch.Generator().manual_seed(3))
    second = mask_tokens(tokens, MASK, (1, MASK), generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    with pytest.raises(ValueError, match="mask \\+ random <= 1"):
        mask_tokens(tokens, MASK, (1, MASK), mask_prob=0.8, random_prob=0.3)


def test_encoder_equals_torch_transformer_encoder_with_gelu_post_norm():
    """Our layers hold torch.nn.TransformerEncoderLayer's parameters and compute its function."""
    torch.manual_seed(0)
    model = Bert(V, max_len=12, dim=16, num_layers=2, num_heads=4, ffn_dim=32, dropout=0.0)
    randomize_parameters(model, seed=1, std=0.3)
    layer = nn.TransformerEncoderLayer(
        16, 4, 32, dropout=0.0, activation="gelu", layer_norm_eps=1e-12, batch_first=True
    )
    reference = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    reference.layers.load_state_dict(model.layers.state_dict())
    tokens = torch.randint(0, V, (3, 12))
    embedded = model.token_embedding(tokens) + model.position_embedding(torch.arange(12))
    expected_hidden = reference(model.embedding_norm(embedded))
    assert_close(model.encode(tokens), expected_hidden, atol=1e-5, rtol=1e-5)
    head = model.head_norm(F.gelu(model.head_transform(expected_hidden)))
    expected_logits = head @ model.token_embedding.weight.T + model.head_bias
    assert_close(model(tokens), expected_logits, atol=1e-5, rtol=1e-5)


def test_every_position_sees_both_sides():
    """Bidirectional: a later token changes the outputs at earlier positions."""
    torch.manual_seed(2)
    model = Bert(V, max_len=8, dim=16, num_layers=1, num_heads=2, ffn_dim=16, dropout=0.0).eval()
    tokens = torch.randint(1, MASK, (1, 8))
    changed = tokens.clone()
    changed[0, 6] = tokens[0, 6] % (MASK - 1) + 1
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert not torch.allclose(before[0, :6], after[0, :6])


def test_longer_sequences_than_the_position_table_fail_in_one_sentence():
    model = Bert(V, max_len=4, dim=8, num_layers=1, num_heads=2, ffn_dim=8)
    with pytest.raises(ValueError, match="longer than the model's max_len 4"):
        model(torch.zeros(1, 5, dtype=torch.long))
