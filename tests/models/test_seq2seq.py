"""The recurrent encoder-decoders (Sutskever; Bahdanau): scratch against fused cells, step-by-step
decoding against teacher forcing, padding, attention weights."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from glimpse.models.recurrent import reverse_padded, scratch_state_from_fused
from glimpse.models.seq2seq import AttentionSeq2Seq, Seq2Seq
from glimpse.models.transformer_seq2seq import TransformerSeq2Seq

SV, TV, START = 11, 13, 1


def _sources(seed: int = 0) -> tuple[Tensor, Tensor]:
    """Three padded source sentences of lengths 5, 2 and 4 (ids >= 3, padding 0)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 2, 4])
    tokens = torch.randint(3, SV, (3, 5), generator=gen)
    tokens[torch.arange(5) >= lengths.unsqueeze(1)] = 0
    return tokens, lengths


def _targets(seed: int = 1, steps: int = 4) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randint(3, TV, (3, steps), generator=gen)
    inputs[:, 0] = START
    return inputs


def _model(kind: str, impl: str = "fused", cell: str = "lstm") -> nn.Module:
    torch.manual_seed(0)
    if kind == "rnn":
        model = Seq2Seq(SV, TV, cell, impl, embed_dim=6, hidden_size=8, num_layers=2, dropout=0)
    elif kind == "attention":
        model = AttentionSeq2Seq(
            SV,
            TV,
            cell,
            impl,
            embed_dim=6,
            hidden_size=8,
            attention_dim=7,
            readout_dim=5,
            num_encoder_layers=2,
            dropout=0,
        )
    else:
        model = TransformerSeq2Seq(
            SV,
            TV,
            dim=8,
            num_heads=2,
            num_encoder_layers=2,
            num_decoder_layers=2,
            ffn_dim=16,
            dropout=0,
        )
    return model.double().eval()


def _map_cell(fused_cell: dict[str, Tensor], cell: str) -> dict[str, Tensor]:
    """A torch.nn.{LSTM,GRU}Cell state dict as a scratch cell's."""
    as_layer = {f"{key}_l0": value for key, value in fused_cell.items()}
    mapped = scratch_state_from_fused(as_layer, cell, 1)
    return {key.removeprefix("cells.0."): value for key, value in mapped.items()}


def _scratch_copy(fused: nn.Module, kind: str, cell: str) -> nn.Module:
    scratch = _model(kind, "scratch", cell)
    state = fused.state_dict()
    mapped = {
        k: v for k, v in state.items() if ".recurrent." not in f".{k}" and "decoder." not in k
    }
    encoder = {
        k.removeprefix("encoder.recurrent."): v
        for k, v in state.items()
        if k.startswith("encoder.recurrent.")
    }
    bidirectional = kind == "attention"
    for key, value in scratch_state_from_fused(encoder, cell, 2, bidirectional).items():
        mapped[f"encoder.recurrent.{key}"] = value
    if kind == "rnn":
        decoder = {
            k.removeprefix("decoder."): v for k, v in state.items() if k.startswith("decoder.")
        }
        for key, value in scratch_state_from_fused(decoder, cell, 2).items():
            mapped[f"decoder.{key}"] = value
    else:
        cell_state = {
            k.removeprefix("recurrent."): v for k, v in state.items() if k.startswith("recurrent.")
        }
        for key, value in _map_cell(cell_state, cell).items():
            mapped[f"recurrent.{key}"] = value
    scratch.load_state_dict(mapped)
    return scratch


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("kind", ["rnn", "attention"])
def test_scratch_cells_give_the_fused_models_outputs(kind, cell):
    """impl=scratch (the lecture's cells) with mapped weights equals impl=fused (torch.nn)."""
    fused = _model(kind, "fused", cell)
    scratch = _scratch_copy(fused, kind, cell)
    tokens, lengths = _sources()
    inputs = _targets()
    with torch.no_grad():
        expected, got = fused(tokens, lengths, inputs), scratch(tokens, lengths, inputs)
    assert got.logits.shape == (3, 4, TV)
    assert_close(got.logits, expected.logits)
    if kind == "attention":
        assert_close(got.attention, expected.attention)


@pytest.mark.parametrize("kind", ["rnn", "attention", "transformer"])
def test_step_by_step_decoding_gives_the_teacher_forced_logits(kind):
    """prepare/init_state/step, fed the same inputs, reproduce forward's logits and attention."""
    model = _model(kind)
    tokens, lengths = _sources()
    inputs = _targets(steps=5)
    with torch.no_grad():
        forced = model(tokens, lengths, inputs)
        memory = model.prepare(tokens, lengths)
        state = model.init_state(memory)
        logits, weights = [], []
        for t in range(inputs.shape[1]):
            step_logits, state, attention = model.step(inputs[:, t], state, memory)
            logits.append(step_logits)
            weights.append(attention)
    assert_close(torch.stack(logits, dim=1), forced.logits)
    if kind == "attention":
        assert_close(torch.stack(weights, dim=1), forced.attention)


@pytest.mark.parametrize("kind", ["rnn", "attention", "transformer"])
def test_padding_of_other_sentences_changes_nothing(kind):
    """A sentence translated alone gets the logits it gets inside a padded batch."""
    model = _model(kind)
    tokens, lengths = _sources()
    inputs = _targets()
    with torch.no_grad():
        batched = model(tokens, lengths, inputs).logits
        alone = model(tokens[1:2, :2], lengths[1:2], inputs[1:2]).logits
    assert_close(batched[1:2], alone)


@pytest.mark.parametrize("kind", ["attention", "transformer"])
def test_attention_weights_are_distributions_over_the_real_source_tokens(kind):
    model = _model(kind)
    tokens, lengths = _sources()
    with torch.no_grad():
        memory = model.prepare(tokens, lengths)
        _, _, attention = model.step(torch.full((3,), START), model.init_state(memory), memory)
    assert attention.shape == (3, 5)
    assert_close(attention.sum(-1), torch.ones(3, dtype=attention.dtype))
    padding = torch.arange(5) >= lengths.unsqueeze(1)
    assert (attention[padding] == 0).all() and (attention[~padding] > 0).all()


def test_reversed_source_reading_is_reading_the_reversed_sentence():
    """Seq2Seq(reverse_source=True) on x equals reverse_source=False on x reversed (Sutskever)."""
    torch.manual_seed(0)
    reading = Seq2Seq(SV, TV, "lstm", embed_dim=6, hidden_size=8, num_layers=1, dropout=0)
    plain = Seq2Seq(
        SV, TV, "lstm", embed_dim=6, hidden_size=8, num_layers=1, dropout=0, reverse_source=False
    )
    plain.load_state_dict(reading.state_dict())
    tokens, lengths = _sources()
    flipped = reverse_padded(tokens.unsqueeze(-1), lengths).squeeze(-1)
    inputs = _targets()
    with torch.no_grad():
        assert_close(
            reading(tokens, lengths, inputs).logits, plain(flipped, lengths, inputs).logits
        )
        assert not torch.allclose(
            reading(tokens, lengths, inputs).logits, plain(tokens, lengths, inputs).logits
        )


def test_the_single_vector_is_all_the_decoder_sees_of_the_source():
    """Seq2Seq's memory is the encoder's final state (L layers of h and c), nothing per token."""
    model = _model("rnn")
    tokens, lengths = _sources()
    with torch.no_grad():
        memory = model.prepare(tokens, lengths)
    assert [tuple(m.shape) for m in memory] == [(3, 2, 8), (3, 2, 8)]


@pytest.mark.parametrize("kind", ["rnn", "attention", "transformer"])
def test_one_training_step_updates_every_parameter(kind):
    model = _model(kind).float().train()
    tokens, lengths = _sources()
    inputs = _targets()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    logits = model(tokens, lengths, inputs).logits
    nn.functional.cross_entropy(logits.flatten(0, 1), inputs.roll(-1, 1).flatten()).backward()
    optimizer.step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert unchanged == []
