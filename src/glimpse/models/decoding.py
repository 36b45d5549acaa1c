"""Greedy and beam search over any step decoder: captioning and translation share them.

Both searches use only the decoder's step protocol::

    memory = decoder.prepare(*source)              # a caption grid (B, N, D), or the source
                                                   # tokens and lengths of a translation
    state = decoder.init_state(memory)
    logits, state, attention = decoder.step(tokens, state, memory)   # tokens (B,)

where every tensor of ``memory`` and ``state`` has the batch on dim 0 (so beam search expands
the memory with ``repeat_interleave`` and reorders the state with ``index_select``), and
``attention`` is ``(B, N)``, the weights over the ``N`` grid positions or source tokens that
produced the step's word, or None. ``source`` is one tensor or a tuple of them, with the batch
on dim 0. They run under the caller's ``torch.no_grad()`` on any device and dtype;
log-probabilities are summed in float32 at least (float64 decoders stay float64).

A hypothesis ``y_1 .. y_L`` (``<end>`` included when it was generated) is ranked by

    ``score = Σ_t log p(y_t | y_<t, x) / L ** length_penalty``,

so ``length_penalty = 0`` ranks by the raw log-probability of the output (the default, the
objective of Vinyals et al. 2015 and Sutskever et al. 2014) and ``length_penalty = 1`` by the
mean log-probability per token, which favours longer outputs. ``<pad>`` and ``<start>`` are
never generated; the log-probabilities of the other ids are the decoder's (not renormalised
without those two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

#: The id written after ``<end>`` (the tokenizer's ``<pad>``).
PAD = 0


class StepDecoder(Protocol):
    """The decoding protocol of the captioning decoders (:mod:`glimpse.models.captioning`) and
    the translation models (:mod:`glimpse.models.seq2seq`,
    :mod:`glimpse.models.transformer_seq2seq`)."""

    def prepare(self, *source: Tensor) -> tuple[Tensor, ...]: ...

    def init_state(self, memory: tuple[Tensor, ...]) -> tuple[Tensor, ...]: ...

    def step(
        self, tokens: Tensor, state: tuple[Tensor, ...], memory: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, ...], Tensor | None]: ...


@dataclass
class Decoded:
    """The chosen output of each input (a caption of each image, a translation of each source).

    tokens: ``(B, L)`` int64 generated ids without ``<start>``; ``<end>`` is included when it
        was generated, then :data:`PAD`. ``L`` is the longest length in the batch.
    lengths: ``(B,)`` int64, generated ids per input including ``<end>``.
    scores: ``(B,)`` the ranking score (see the module docstring).
    attention: ``(B, L, N)`` the attention weights that produced each id (zeros after the
        end), or None for a decoder without attention.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    attention: Tensor | None


def normalised_score(log_prob: Tensor, length: Tensor | int, length_penalty: float) -> Tensor:
    """``log_prob / length ** length_penalty`` (the raw log-probability for a penalty of 0)."""
    if isinstance(length, int):
        return log_prob / float(length) ** length_penalty
    return log_prob / length.to(log_prob.dtype) ** length_penalty


def _log_probs(logits: Tensor, start_id: int) -> Tensor:
    """``log p`` over the vocabulary, with ``<pad>`` and ``<start>`` ruled out (``-inf``)."""
    log_probs = logits.log_softmax(dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    banned = torch.zeros(log_probs.shape[-1], dtype=torch.bool, device=log_probs.device)
    banned[[PAD, start_id]] = True
    return log_probs.masked_fill(banned, float("-inf"))


def _check_length(max_length: int) -> None:
    if max_length < 1:
        raise ValueError(f"max_length={max_length} must be at least 1 generated token.")


def _prepare(decoder: StepDecoder, source: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """``decoder.prepare`` of one source tensor or a tuple of them."""
    return decoder.prepare(*source) if isinstance(source, tuple) else decoder.prepare(source)


def greedy_decode(
    decoder: StepDecoder,
    source: Tensor | tuple[Tensor, ...],
    start_id: int,
    end_id: int,
    max_length: int,
    length_penalty: float = 0.0,
) -> Decoded:
    """Take the most probable token at every step until ``<end>`` or ``max_length`` tokens.

    Args:
        decoder: follows :class:`StepDecoder`.
        source: what ``decoder.prepare`` takes: a caption grid ``(B, N, D)``, or a tuple
            ``(tokens (B, S), lengths (B,))`` of source sentences.
        start_id, end_id: the ``<start>`` and ``<end>`` ids.
        max_length: the most generated ids, ``<end>`` included.
        length_penalty: only changes the reported scores, so that they compare with
            :func:`beam_search`'s.
    """
    _check_length(max_length)
    memory = _prepare(decoder, source)
    state = decoder.init_state(memory)
    batch, device = memory[0].shape[0], memory[0].device
    tokens = torch.full((batch,), start_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    log_prob: Tensor | int = 0
    chosen_ids, maps = [], []
    for _ in range(max_length):
        logits, state, attention = decoder.step(tokens, state, memory)
        log_probs = _log_probs(logits, start_id)
        tokens = log_probs.argmax(dim=-1)
        alive = ~finished
        picked = log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1)
        log_prob = log_prob + torch.where(alive, picked, 0.0)
        chosen_ids.append(torch.where(alive, tokens, PAD))
        if attention is not None:
            maps.append(attention * alive.unsqueeze(1).to(attention.dtype))
        lengths = lengths + alive.long()
        finished = finished | (tokens == end_id)
        if bool(finished.all()):
            break
    return Decoded(
        tokens=torch.stack(chosen_ids, dim=1),
        lengths=lengths,
        scores=normalised_score(log_prob, lengths, length_penalty),
        attention=torch.stack(maps, dim=1) if maps else None,
    )


def _pad_to(x: Tensor, length: int) -> Tensor:
    """Zero-pad dim 1 of ``x`` to ``length``."""
    shape = (x.shape[0], length - x.shape[1], *x.shape[2:])
    return torch.cat([x, x.new_zeros(shape)], dim=1)


def beam_search(
    decoder: StepDecoder,
    source: Tensor | tuple[Tensor, ...],
    start_id: int,
    end_id: int,
    max_length: int,
    beam_size: int,
    length_penalty: float = 0.0,
) -> Decoded:
    """Batched beam search: ``beam_size`` live hypotheses per input, the best output returned.

    The ``B·K`` hypotheses run as one batch: the memory is expanded once with
    ``repeat_interleave`` and the state reordered with ``index_select`` on dim 0. At each step
    the ``K·V`` extensions of an input's live hypotheses are ranked by their summed
    log-probability; an extension by ``<end>`` among the top ``K`` finishes a hypothesis
    (ranked by its normalised score, see the module docstring), and the best ``K`` extensions
    by another token stay live. An input is done when ``K`` hypotheses have finished; at
    ``max_length`` the live hypotheses of the inputs not done compete as they are, with
    ``L = max_length``. Only the best finished hypothesis of each input is kept, as only it is
    returned. ``beam_size = 1`` is :func:`greedy_decode`.

    Args:
        decoder: follows :class:`StepDecoder`.
        source: what ``decoder.prepare`` takes (see :func:`greedy_decode`).
        start_id, end_id: the ``<start>`` and ``<end>`` ids.
        max_length: the most generated ids, ``<end>`` included.
        beam_size: K.
        length_penalty: the exponent of the length normalisation; 0 ranks by log-probability.
    """
    _check_length(max_length)
    if beam_size < 1:
        raise ValueError(f"beam_size={beam_size} must be at least 1.")
    prepared = _prepare(decoder, source)
    batch, beams, device = prepared[0].shape[0], beam_size, prepared[0].device
    memory = tuple(m.repeat_interleave(beams, dim=0) for m in prepared)
    state = decoder.init_state(memory)
    tokens = torch.full((batch * beams,), start_id, dtype=torch.long, device=device)
    offsets = torch.arange(batch, device=device).unsqueeze(1) * beams
    history = torch.zeros(batch, beams, 0, dtype=torch.long, device=device)
    maps: Tensor | None = None
    found = torch.zeros(batch, dtype=torch.long, device=device)
    best_tokens = torch.zeros(batch, max_length, dtype=torch.long, device=device)
    best_lengths = torch.zeros(batch, dtype=torch.long, device=device)
    best_maps: Tensor | None = None
    beam_scores = best_scores = None
    for t in range(max_length):
        logits, state, attention = decoder.step(tokens, state, memory)
        log_probs = _log_probs(logits, start_id)
        vocab = log_probs.shape[-1]
        log_probs = log_probs.view(batch, beams, vocab)
        if beam_scores is None:
            beam_scores = log_probs.new_full((batch, beams), float("-inf"))
            beam_scores[:, 0] = 0.0
            best_scores = log_probs.new_full((batch,), float("-inf"))
        if attention is not None and maps is None:
            maps = attention.new_zeros(batch, beams, 0, attention.shape[-1])
            best_maps = attention.new_zeros(batch, max_length, attention.shape[-1])
        candidates = (beam_scores.unsqueeze(-1) + log_probs).view(batch, beams * vocab)
        count = min(2 * beams, beams * vocab)
        top_scores, top_index = candidates.topk(count, dim=1)
        top_beam, top_token = top_index // vocab, top_index % vocab
        rank = torch.arange(count, device=device)
        is_end = top_token == end_id

        # Finish: ends within the top K; keep the best by normalised score.
        finishing = is_end & (rank < beams) & top_scores.isfinite()
        ranked = normalised_score(top_scores, t + 1, length_penalty)
        ranked = ranked.masked_fill(~finishing, float("-inf"))
        new_best, position = ranked.max(dim=1)
        improve = new_best > best_scores
        parent = top_beam.gather(1, position.unsqueeze(1))
        prefix = history.gather(1, parent.unsqueeze(-1).expand(-1, -1, t)).squeeze(1)
        ended = torch.cat([prefix, prefix.new_full((batch, 1), end_id)], dim=1)
        best_tokens = torch.where(improve.unsqueeze(1), _pad_to(ended, max_length), best_tokens)
        best_lengths = torch.where(improve, t + 1, best_lengths)
        best_scores = torch.where(improve, new_best, best_scores)
        if maps is not None:
            step_maps = attention.view(batch, beams, -1)
            index = parent.unsqueeze(-1).expand(-1, -1, step_maps.shape[-1])
            ended_maps = torch.cat(
                [
                    maps.gather(1, index.unsqueeze(2).expand(-1, -1, t, -1)).squeeze(1),
                    step_maps.gather(1, index),
                ],
                dim=1,
            )
            best_maps = torch.where(
                improve.view(batch, 1, 1), _pad_to(ended_maps, max_length), best_maps
            )
        found = found + finishing.long().sum(dim=1)
        done = found >= beams

        # Live: the best K extensions by a token other than <end>.
        live = (rank + is_end.long() * count).argsort(dim=1)[:, :beams]
        live_beam, live_token = top_beam.gather(1, live), top_token.gather(1, live)
        beam_scores = top_scores.gather(1, live).masked_fill(done.unsqueeze(1), float("-inf"))
        history = torch.cat(
            [history.gather(1, live_beam.unsqueeze(-1).expand(-1, -1, t)), live_token[..., None]],
            dim=2,
        )
        if maps is not None:
            step_maps = attention.view(batch, beams, -1)
            width = step_maps.shape[-1]
            index = live_beam.unsqueeze(-1).expand(-1, -1, width)
            maps = torch.cat(
                [
                    maps.gather(1, index.unsqueeze(2).expand(-1, -1, t, -1)),
                    step_maps.gather(1, index).unsqueeze(2),
                ],
                dim=2,
            )
        flat = (offsets + live_beam).view(-1)
        state = tuple(s.index_select(0, flat) for s in state)
        tokens = live_token.view(-1)
        if bool(done.all()):
            break
    else:
        live_best, position = normalised_score(beam_scores, max_length, length_penalty).max(1)
        improve = live_best > best_scores
        chosen = history.gather(1, position.view(batch, 1, 1).expand(-1, -1, max_length))
        best_tokens = torch.where(improve.unsqueeze(1), chosen.squeeze(1), best_tokens)
        best_lengths = torch.where(improve, max_length, best_lengths)
        best_scores = torch.where(improve, live_best, best_scores)
        if maps is not None:
            index = position.view(batch, 1, 1, 1).expand(-1, -1, max_length, maps.shape[-1])
            chosen_maps = maps.gather(1, index).squeeze(1)
            best_maps = torch.where(improve.view(batch, 1, 1), chosen_maps, best_maps)
    longest = int(best_lengths.max())
    return Decoded(
        tokens=best_tokens[:, :longest],
        lengths=best_lengths,
        scores=best_scores,
        attention=None if best_maps is None else best_maps[:, :longest],
    )


__all__ = ["PAD", "Decoded", "StepDecoder", "beam_search", "greedy_decode", "normalised_score"]
