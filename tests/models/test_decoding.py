"""Greedy and beam search (glimpse.models.decoding) against each other and against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from glimpse.models.captioning import ShowAttendTell, ShowTell
from glimpse.models.decoding import PAD, Decoded, beam_search, greedy_decode
from glimpse.models.seq2seq import AttentionSeq2Seq, Seq2Seq
from glimpse.models.transformer_seq2seq import TransformerSeq2Seq

START, END = 1, 2
V, D, E, H, A, N = 20, 16, 12, 32, 24, 5
#: Added to the random decoders' <end> logit so that some captions end before max_length.
END_BIAS = {"show_tell": 1.0, "attend": 4.0}


class ChainDecoder(nn.Module):
    """A second-order Markov chain over ids following the step protocol.

    The "grid" ``(B, V*V, V)`` holds each image's logits of the next id given the two previous
    ones; the state is the id before the one being fed, so beam search must reorder it.
    """

    uses_attention = False

    def prepare(self, grid: Tensor) -> tuple[Tensor, ...]:
        vocab = grid.shape[-1]
        return (grid.view(-1, vocab, vocab, vocab),)

    def init_state(self, memory: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        batch = memory[0].shape[0]
        return (torch.full((batch,), START, dtype=torch.long, device=memory[0].device),)

    def step(self, tokens, state, memory):
        table = memory[0]
        logits = table[torch.arange(table.shape[0]), state[0], tokens]
        return logits, (tokens,), None


def _chain_grid(rows: Tensor) -> Tensor:
    """Logits ``(B, V, V, V)`` -> the decoder's grid."""
    vocab = rows.shape[-1]
    return rows.reshape(rows.shape[0], vocab * vocab, vocab)


def _brute_force(grid: Tensor, max_length: int, length_penalty: float) -> tuple[list, float]:
    """The best (ids, score) of one image over every caption of at most max_length ids
    (<pad> and <start> excluded, as the searches exclude them)."""
    vocab = grid.shape[-1]
    log_p = grid.view(vocab, vocab, vocab).log_softmax(-1)
    words = [i for i in range(vocab) if i not in (PAD, START, END)]
    best, best_score = None, -math.inf
    for length in range(1, max_length + 1):
        for body in itertools.product(words, repeat=length - 1):
            last = [END, *words] if length == max_length else [END]
            for token in last:
                prev2, prev1, total = START, START, 0.0
                for current in (*body, token):
                    total += float(log_p[prev2, prev1, current])
                    prev2, prev1 = prev1, current
                score = total / length**length_penalty
                if score > best_score:
                    best, best_score = [*body, token], score
    return best, best_score


def _random_decoder(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "show_tell":
        decoder = ShowTell(V, D, "lstm", "fused", E, H)
    else:
        decoder = ShowAttendTell(V, D, E, H, A)
    decoder = decoder.double().eval()
    with torch.no_grad():
        decoder.head.weight.mul_(4.0)
        decoder.head.bias[END] += END_BIAS[kind]
    return decoder


def _grid(batch: int, seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(batch, N, D, generator=gen, dtype=torch.float64)


def _assert_same(got: Decoded, expected: Decoded) -> None:
    assert_close(got.tokens, expected.tokens)
    assert_close(got.lengths, expected.lengths)
    assert_close(got.scores, expected.scores)
    if expected.attention is None:
        assert got.attention is None
    else:
        assert_close(got.attention, expected.attention)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("kind", ["show_tell", "attend"])
def test_beam_of_one_is_greedy_decoding(kind, length_penalty):
    """Beam size 1 gives greedy's tokens, lengths, scores and attention, batched."""
    decoder, grid = _random_decoder(kind), _grid(6)
    with torch.no_grad():
        greedy = greedy_decode(decoder, grid, START, END, 7, length_penalty=length_penalty)
        beam = beam_search(decoder, grid, START, END, 7, 1, length_penalty=length_penalty)
    ended = (greedy.tokens == END).any(dim=1)
    assert ended.any() and not ended.all(), "the test needs captions that end and some that don't"
    _assert_same(beam, greedy)


@pytest.mark.parametrize("kind", ["show_tell", "attend"])
def test_decoded_captions_are_padded_after_end(kind):
    """Ids after <end> are <pad>, lengths count <end>, attention rows are distributions."""
    decoder, grid = _random_decoder(kind), _grid(6)
    with torch.no_grad():
        results = [greedy_decode(decoder, grid, START, END, 7)]
        results.append(beam_search(decoder, grid, START, END, 7, 3))
    for decoded in results:
        steps = torch.arange(decoded.tokens.shape[1])
        inside = steps < decoded.lengths.unsqueeze(1)
        assert (decoded.tokens[~inside] == PAD).all()
        assert (decoded.tokens[inside] != PAD).all()
        for row, length in zip(decoded.tokens, decoded.lengths, strict=True):
            assert (row[: length - 1] != END).all()
            assert row[length - 1] == END or length == 7
        if kind == "attend":
            assert decoded.attention.shape == (6, decoded.tokens.shape[1], N)
            sums = decoded.attention.sum(-1)
            assert_close(sums[inside], torch.ones_like(sums[inside]))
            assert (sums[~inside] == 0).all()
        else:
            assert decoded.attention is None


def _hand_built_chain() -> Tensor:
    """Greedy takes "a <end>" (p = 0.2); "b <end>" (p = 0.36) is the best caption."""
    probs = torch.full((5, 5), 1.0 / 3)
    probs[START] = torch.tensor([0.0, 0.0, 0.1, 0.5, 0.4])
    probs[3] = torch.tensor([0.0, 0.0, 0.4, 0.3, 0.3])
    probs[4] = torch.tensor([0.0, 0.0, 0.9, 0.05, 0.05])
    rows = probs.log().expand(5, 5, 5).unsqueeze(0).double()
    return _chain_grid(rows)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_finds_the_best_caption_greedy_misses(length_penalty):
    """On a hand-built chain, beam 2 returns the brute-force optimum; greedy does not."""
    grid = _hand_built_chain()
    best, best_score = _brute_force(grid[0], 4, length_penalty)
    with torch.no_grad():
        greedy = greedy_decode(ChainDecoder(), grid, START, END, 4, length_penalty)
        beam = beam_search(ChainDecoder(), grid, START, END, 4, 2, length_penalty)
    assert best == [4, END]
    assert greedy.tokens[0].tolist() == [3, END]
    assert beam.tokens[0].tolist() == best
    assert beam.lengths.tolist() == [len(best)]
    assert beam.scores.item() == pytest.approx(best_score)


@pytest.mark.parametrize("length_penalty", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("vocab", "max_length", "beam_size"), [(5, 4, 32), (6, 3, 40)])
def test_wide_beam_search_is_exhaustive(vocab, max_length, beam_size, length_penalty):
    """A beam wider than the number of captions returns the brute-force best of each image."""
    gen = torch.Generator().manual_seed(vocab)
    rows = 2 * torch.randn(4, vocab, vocab, vocab, generator=gen).double()
    rows[..., END] -= 1.0
    grid = _chain_grid(rows)
    with torch.no_grad():
        beam = beam_search(ChainDecoder(), grid, START, END, max_length, beam_size, length_penalty)
    for image in range(4):
        best, best_score = _brute_force(grid[image], max_length, length_penalty)
        length = int(beam.lengths[image])
        assert beam.tokens[image, :length].tolist() == best
        assert beam.scores[image].item() == pytest.approx(best_score)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_unfinished_captions_compete_at_max_length(length_penalty):
    """When <end> is improbable the best caption is cut at max_length, without <end>."""
    gen = torch.Generator().manual_seed(0)
    rows = 2 * torch.randn(3, 5, 5, 5, generator=gen).double()
    rows[..., END] -= 6.0
    grid = _chain_grid(rows)
    with torch.no_grad():
        beam = beam_search(ChainDecoder(), grid, START, END, 4, 3, length_penalty)
    assert beam.lengths.tolist() == [4, 4, 4]
    for image in range(3):
        best, best_score = _brute_force(grid[image], 4, length_penalty)
        assert best[-1] != END
        assert beam.tokens[image].tolist() == best
        assert beam.scores[image].item() == pytest.approx(best_score)


@pytest.mark.parametrize("kind", ["chain", "attend"])
def test_batched_beam_search_equals_one_image_at_a_time(kind):
    """Each image's result does not depend on the other images of the batch."""
    if kind == "chain":
        gen = torch.Generator().manual_seed(3)
        decoder = ChainDecoder()
        grid = _chain_grid(2 * torch.randn(5, 6, 6, 6, generator=gen).double())
    else:
        decoder, grid = _random_decoder("attend"), _grid(5)
    with torch.no_grad():
        batched = beam_search(decoder, grid, START, END, 6, 3, length_penalty=0.7)
        for image in range(5):
            single = beam_search(decoder, grid[image : image + 1], START, END, 6, 3, 0.7)
            length = int(single.lengths[0])
            assert int(batched.lengths[image]) == length
            assert_close(batched.tokens[image, :length], single.tokens[0, :length])
            assert_close(batched.scores[image], single.scores[0])
            if single.attention is not None:
                assert_close(batched.attention[image, :length], single.attention[0, :length])


def _translator(kind: str, vocab: int) -> nn.Module:
    """A tiny random translation model of each family over a target vocabulary of ``vocab``."""
    torch.manual_seed(7)
    if kind == "seq2seq":
        model = Seq2Seq(6, vocab, "lstm", embed_dim=4, hidden_size=6, num_layers=2, dropout=0)
    elif kind == "attention":
        model = AttentionSeq2Seq(
            6, vocab, "gru", embed_dim=4, hidden_size=6, attention_dim=5, readout_dim=4, dropout=0
        )
    else:
        model = TransformerSeq2Seq(
            6,
            vocab,
            dim=8,
            num_heads=2,
            num_encoder_layers=1,
            num_decoder_layers=2,
            ffn_dim=8,
            dropout=0,
        )
    model = model.double().eval()
    for parameter in model.parameters():
        parameter.data.mul_(3.0)
    return model


def _brute_force_translation(model, tokens, lengths, vocab, max_length, length_penalty):
    """The best (ids, score) of one source over every output of at most max_length ids, each
    scored by teacher forcing (forward), not by the step protocol the search uses."""
    words = [i for i in range(vocab) if i not in (PAD, START, END)]
    candidates = []
    for length in range(1, max_length + 1):
        for body in itertools.product(words, repeat=length - 1):
            last = [END, *words] if length == max_length else [END]
            candidates += [[*body, token] for token in last]
    best, best_score = None, -math.inf
    for ids in candidates:
        inputs = torch.tensor([[START, *ids[:-1]]])
        log_p = model(tokens, lengths, inputs).logits.log_softmax(-1)[0]
        total = float(log_p[torch.arange(len(ids)), torch.tensor(ids)].sum())
        score = total / len(ids) ** length_penalty
        if score > best_score:
            best, best_score = ids, score
    return best, best_score


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("kind", ["seq2seq", "attention", "transformer"])
def test_wide_beam_search_finds_the_best_translation(kind, length_penalty):
    """On a vocabulary of 3 words, a beam as wide as the 40 outputs of at most 3 ids returns the
    brute-force best translation of each source, for every translation model."""
    vocab, max_length = 6, 3
    model = _translator(kind, vocab)
    tokens = torch.tensor([[3, 4, 5, 0], [5, 3, 0, 0], [4, 4, 3, 5]])
    lengths = torch.tensor([3, 2, 4])
    with torch.no_grad():
        beam = beam_search(model, (tokens, lengths), START, END, max_length, 40, length_penalty)
        for row in range(3):
            best, best_score = _brute_force_translation(
                model,
                tokens[row : row + 1, : lengths[row]],
                lengths[row : row + 1],
                vocab,
                max_length,
                length_penalty,
            )
            length = int(beam.lengths[row])
            assert beam.tokens[row, :length].tolist() == best
            assert beam.scores[row].item() == pytest.approx(best_score)


@pytest.mark.parametrize("kind", ["seq2seq", "attention", "transformer"])
def test_batched_translation_equals_one_sentence_at_a_time(kind):
    model = _translator(kind, 9)
    tokens = torch.tensor([[3, 4, 5, 0], [5, 3, 0, 0], [4, 4, 3, 5]])
    lengths = torch.tensor([3, 2, 4])
    with torch.no_grad():
        batched = beam_search(model, (tokens, lengths), START, END, 6, 3, 0.5)
        greedy = greedy_decode(model, (tokens, lengths), START, END, 6)
        for row in range(3):
            source = (tokens[row : row + 1, : lengths[row]], lengths[row : row + 1])
            single = beam_search(model, source, START, END, 6, 3, 0.5)
            length = int(single.lengths[0])
            assert_close(batched.tokens[row, :length], single.tokens[0, :length])
            assert_close(batched.scores[row], single.scores[0])
            if single.attention is not None:
                assert_close(
                    batched.attention[row, :length, : lengths[row]], single.attention[0, :length]
                )
            one_greedy = greedy_decode(model, source, START, END, 6)
            assert_close(greedy.tokens[row, : int(one_greedy.lengths[0])], one_greedy.tokens[0])
