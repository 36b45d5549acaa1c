"""CharTransformer's attention and blocks against torch.nn, causality, tying and limits."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from glimpse.models.char_rnn import count_parameters
from glimpse.models.char_transformer import Block, CausalSelfAttention, CharTransformer

B, T, D, HEADS, V = 2, 6, 8, 2, 11


def _causal_mask(length: int) -> torch.Tensor:
    """True above the diagonal: position t may not attend to s > t."""
    return torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)


def _randomize(module: nn.Module, seed: int, std: float = 0.3) -> None:
    """Give every parameter (LayerNorm affine and biases included) random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)


def _copy_attention(mha: nn.MultiheadAttention, attn: CausalSelfAttention) -> None:
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)


def _input(seed: int) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_causal_self_attention_matches_multihead_attention():
    """Same weights and a causal mask give torch.nn.MultiheadAttention's output."""
    attn = CausalSelfAttention(D, HEADS).double().eval()
    _randomize(attn, 0)
    mha = nn.MultiheadAttention(D, HEADS, dropout=0.0, batch_first=True).double().eval()
    _copy_attention(mha, attn)
    x = _input(1)
    expected, _ = mha(x, x, x, attn_mask=_causal_mask(T), need_weights=False)
    assert_close(attn(x), expected)


def test_block_matches_pre_norm_transformer_encoder_layer():
    """A Block is a norm-first GELU TransformerEncoderLayer with a causal mask."""
    block = Block(D, HEADS).double().eval()
    _randomize(block, 2)
    layer = nn.TransformerEncoderLayer(
        D,
        HEADS,
        dim_feedforward=4 * D,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    layer = layer.double().eval()
    _copy_attention(layer.self_attn, block.attn)
    layer.linear1.load_state_dict(block.mlp[0].state_dict())
    layer.linear2.load_state_dict(block.mlp[2].state_dict())
    layer.norm1.load_state_dict(block.ln_1.state_dict())
    layer.norm2.load_state_dict(block.ln_2.state_dict())
    x = _input(3)
    expected = layer(x, src_mask=_causal_mask(T), is_causal=True)
    assert_close(block(x), expected)


def _model(**overrides) -> CharTransformer:
    kwargs = dict(vocab_size=V, block_size=T, dim=D, num_layers=2, num_heads=HEADS)
    kwargs.update(overrides)
    torch.manual_seed(4)
    return CharTransformer(**kwargs).double().eval()


@pytest.mark.parametrize("t", [0, 2, T - 2])
def test_logits_do_not_depend_on_future_tokens(t):
    """Changing tokens after t leaves logits at positions <= t unchanged."""
    model = _model()
    _randomize(model, 5)
    gen = torch.Generator().manual_seed(6)
    idx = torch.randint(0, V, (B, T), generator=gen)
    changed = idx.clone()
    changed[:, t + 1 :] = (idx[:, t + 1 :] + torch.randint(1, V, (B, T - t - 1), generator=gen)) % V
    assert (changed[:, t + 1 :] != idx[:, t + 1 :]).all()
    with torch.no_grad():
        logits, _ = model(idx)
        logits_changed, _ = model(changed)
    assert_close(logits_changed[:, : t + 1], logits[:, : t + 1])
    assert not torch.allclose(logits_changed[:, t + 1 :], logits[:, t + 1 :])


def test_head_is_tied_to_token_embedding_and_counted_once():
    """head.weight is the embedding matrix itself; the count includes it once."""
    model = _model()
    assert model.head.weight is model.token_embedding.weight
    per_block = (
        2 * 2 * D  # ln_1, ln_2
        + 3 * D * D + 3 * D  # qkv
        + D * D + D  # proj
        + D * 4 * D + 4 * D  # mlp.0
        + 4 * D * D + D  # mlp.2
    )  # fmt: skip
    expected = V * D + T * D + 2 * per_block + 2 * D
    assert count_parameters(model) == expected
    with_duplicates = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert with_duplicates == expected + V * D


def test_sequence_longer_than_block_size_raises():
    """T > block_size is refused with a message naming block_size."""
    model = _model()
    model(torch.zeros(1, T, dtype=torch.long))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, T + 1, dtype=torch.long))


def test_dim_not_divisible_by_num_heads_raises():
    """dim % num_heads != 0 is refused by the model and the attention layer."""
    with pytest.raises(ValueError, match="divisible"):
        CharTransformer(V, block_size=T, dim=10, num_layers=1, num_heads=3)
    with pytest.raises(ValueError, match="divisible"):
        CausalSelfAttention(10, 4)


@pytest.mark.parametrize(("cache_len", "new_len"), [(None, 3), (None, T + 2), (T, 2), (2, 1)])
def test_generation_step_crops_context_to_block_size(cache_len, new_len):
    """The new context is the last block_size tokens; logits are forward(context)[:, -1]."""
    model = _model()
    gen = torch.Generator().manual_seed(7)
    cache = None if cache_len is None else torch.randint(0, V, (B, cache_len), generator=gen)
    idx = torch.randint(0, V, (B, new_len), generator=gen)
    with torch.no_grad():
        logits, context = model.generation_step(idx, cache)
        full = idx if cache is None else torch.cat([cache, idx], dim=1)
        assert torch.equal(context, full[:, -T:])
        assert context.shape == (B, min(full.shape[1], T))
        assert logits.shape == (B, V)
        assert_close(logits, model(context)[0][:, -1])
