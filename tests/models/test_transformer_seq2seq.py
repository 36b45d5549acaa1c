"""The encoder-decoder Transformer against torch.nn.Transformer with copied weights, and its parts
against the paper's formulas."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import randomize_parameters
from torch import nn
from torch.testing import assert_close

from glimpse.models.transformer_seq2seq import TransformerSeq2Seq, sinusoidal_positions

SV, TV, D, HEADS, FFN = 17, 19, 16, 4, 32


def _pair(norm_first: bool, activation: str = "relu"):
    """torch.nn.Transformer with random weights (biases and norms included) and ours holding
    its state dict; the paper's post-norm has no final LayerNorm, so torch's is removed."""
    torch.manual_seed(0)
    reference = nn.Transformer(
        D,
        HEADS,
        2,
        2,
        FFN,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
    )
    if not norm_first:
        reference.encoder.norm = None
        reference.decoder.norm = None
    randomize_parameters(reference, seed=1, std=0.3)
    ours = TransformerSeq2Seq(
        SV, TV, D, HEADS, 2, 2, FFN, dropout=0.0, norm_first=norm_first, activation=activation
    )
    missing, unexpected = ours.load_state_dict(reference.state_dict(), strict=False)
    assert unexpected == []
    assert sorted(missing) == ["source_embedding.weight", "target_embedding.weight"]
    return reference.train(), ours.train()


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_equals_torch_transformer_with_copied_weights(norm_first, activation):
    """Logits and every weight's gradient equal torch.nn.Transformer's (atol 1e-5) with the source's
    padding masked in encoder self-attention and cross-attention and a causal decoder."""
    reference, ours = _pair(norm_first, activation)
    gen = torch.Generator().manual_seed(2)
    lengths = torch.tensor([7, 3, 5])
    tokens = torch.randint(3, SV, (3, 7), generator=gen)
    padding = torch.arange(7) >= lengths.unsqueeze(1)
    tokens[padding] = 0
    inputs = torch.randint(3, TV, (3, 6), generator=gen)

    logits = ours(tokens, lengths, inputs).logits
    source = ours.embed(ours.source_embedding, tokens)
    target = ours.embed(ours.target_embedding, inputs)
    hidden = reference(
        source,
        target,
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(6),
        src_key_padding_mask=padding,
        memory_key_padding_mask=padding,
        tgt_is_causal=True,
    )
    expected = hidden @ ours.target_embedding.weight.T
    assert logits.shape == (3, 6, TV)
    assert_close(logits, expected, atol=1e-5, rtol=1e-5)

    weights = torch.randn(logits.shape, generator=gen)
    names = [name for name, _ in reference.named_parameters()]
    ours_parameters = dict(ours.named_parameters())
    ours_grads = torch.autograd.grad(
        (logits * weights).sum(), [ours_parameters[name] for name in names]
    )
    reference_grads = torch.autograd.grad((expected * weights).sum(), list(reference.parameters()))
    assert_close(ours_grads, reference_grads, atol=1e-5, rtol=1e-5)


def test_sinusoidal_positions_follow_the_paper():
    """PE(p, 2i) = sin(p / 10000^(2i/D)), PE(p, 2i+1) = cos(p / 10000^(2i/D))."""
    table = sinusoidal_positions(9, 6)
    for p in range(9):
        for i in range(3):
            angle = p / 10000 ** (2 * i / 6)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert_close(sinusoidal_positions(4, 6, offset=5), table[5:9])


def test_target_embedding_is_the_output_projection_and_embeddings_are_scaled():
    model = TransformerSeq2Seq(SV, TV, D, HEADS, 1, 1, FFN, dropout=0.0)
    hidden = torch.randn(2, 3, D)
    assert_close(model.logits(hidden), hidden @ model.target_embedding.weight.T)
    tokens = torch.tensor([[4, 5]])
    expected = model.target_embedding(tokens) * math.sqrt(D) + sinusoidal_positions(2, D)
    assert_close(model.embed(model.target_embedding, tokens), expected)
    assert model.source_embedding.weight[0].abs().max() == 0


def test_a_later_target_token_does_not_change_earlier_logits():
    """The decoder's self-attention is causal."""
    torch.manual_seed(3)
    model = TransformerSeq2Seq(SV, TV, D, HEADS, 1, 2, FFN, dropout=0.0).eval()
    tokens, lengths = torch.randint(3, SV, (1, 4)), torch.tensor([4])
    inputs = torch.randint(3, TV, (1, 5))
    changed = inputs.clone()
    changed[0, 3] = (inputs[0, 3] + 1 - 3) % (TV - 3) + 3
    with torch.no_grad():
        before, after = (
            model(tokens, lengths, inputs).logits,
            model(tokens, lengths, changed).logits,
        )
    assert_close(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3:], after[:, 3:])
