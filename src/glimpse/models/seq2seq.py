"""Recurrent encoder-decoders for translation: the single-vector bottleneck and attention.

* :class:`Seq2Seq` (Sutskever et al. 2014; the lecture's "many to one + one to many"): an
  encoder RNN reads the source, its final state is the single vector ``c`` that initialises a
  decoder RNN, which then generates the target one token at a time,
  ``h_t = RNN(E y_{t-1}, h_{t-1})``, ``h_0 = c``, ``p(y_t) = softmax(W_o h_t + b_o)``. As in
  the paper, the source is read in reverse order by default.
* :class:`AttentionSeq2Seq` (Bahdanau et al. 2015): a bidirectional encoder gives one
  annotation ``h_j = [h→_j; h←_j]`` per source token and the decoder computes a new context
  vector at every step (the lecture's attention idea):
  ``e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j)``, ``α_ij = softmax_j(e_ij)`` over the real
  (unpadded) tokens, ``c_i = Σ_j α_ij h_j``, ``s_i = RNN([E y_{i-1}; c_i], s_{i-1})``,
  ``s_0 = tanh(W_s h←_1)``, and a maxout read-out ``t_i = maxout(U_o s_i + V_o E y_{i-1} +
  C_o c_i)``, ``p(y_i) = softmax(W_o t_i)``.

Both run the lecture's cells (``impl="scratch"``, :mod:`glimpse.models.recurrent`) or
torch.nn's (``impl="fused"``) and follow one protocol: ``forward(sources, source_lengths,
inputs)`` is teacher forcing; ``prepare``, ``init_state`` and ``step`` are what the searches
of :mod:`glimpse.models.decoding` call, every tensor of a memory or state having the batch on
dim 0. Token id 0 is padding in both vocabularies.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from glimpse.models.recurrent import (
    CellType,
    ElmanCell,
    GRUCell,
    LSTMCell,
    ScratchRecurrent,
    fused_recurrent,
    reverse_padded,
    run_recurrent,
)

Memory = tuple[Tensor, ...]
State = tuple[Tensor, ...]
Impl = Literal["fused", "scratch"]
#: The padding id of source and target vocabularies.
PAD_ID = 0


class Seq2SeqOutput(NamedTuple):
    """Teacher-forced outputs of a translation model.

    logits: ``(B, T, V)``, the scores of target token ``t + 1`` given tokens ``0..t``.
    attention: ``(B, T, S)`` the weights over the source tokens at each target step (attention
        models), else None.
    """

    logits: Tensor
    attention: Tensor | None


def _check(cell: str, impl: str) -> None:
    if cell not in ("rnn", "lstm", "gru"):
        raise ValueError(f"Unknown model.net.cell={cell!r}; choose rnn, lstm or gru.")
    if impl not in ("fused", "scratch"):
        raise ValueError(f"Unknown model.net.impl={impl!r}; choose fused or scratch.")


def recurrent_stack(
    cell: CellType,
    impl: Impl,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    dropout: float,
    bidirectional: bool = False,
) -> nn.Module:
    """A :class:`ScratchRecurrent` (the GRU in torch's reset-after form, so both hold the same
    function) or the torch.nn layer of the same shape; run it with :func:`run_recurrent`."""
    if impl == "scratch":
        return ScratchRecurrent(
            cell, input_size, hidden_size, num_layers, dropout, True, bidirectional
        )
    return fused_recurrent(cell, input_size, hidden_size, num_layers, dropout, bidirectional)


def recurrent_cell(cell: CellType, impl: Impl, input_size: int, hidden_size: int) -> nn.Module:
    """One cell for step-by-step decoding: torch.nn's ``RNNCell``/``LSTMCell``/``GRUCell`` or
    the lecture's (:mod:`glimpse.models.recurrent`, the GRU reset-after)."""
    if impl == "fused":
        return {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell](
            input_size, hidden_size
        )
    if cell == "rnn":
        return ElmanCell(input_size, hidden_size)
    if cell == "lstm":
        return LSTMCell(input_size, hidden_size)
    return GRUCell(input_size, hidden_size, reset_after=True)


def step_cell(cell: nn.Module, x: Tensor, state: State) -> State:
    """``state`` after one step of ``cell`` on ``x (B, X)``; ``(h,)`` or ``(h, c)``, each
    ``(B, H)``."""
    scratch = isinstance(cell, (ElmanCell, LSTMCell, GRUCell))
    if isinstance(cell, (nn.LSTMCell, LSTMCell)):
        h, c = cell.step(cell.project_inputs(x), state) if scratch else cell(x, state)
        return h, c
    h = cell.step(cell.project_inputs(x), state[0]) if scratch else cell(x, state[0])
    return (h,)


def _batch_first(state: Tensor | tuple[Tensor, ...]) -> State:
    """A recurrent stack's state ``(L, B, H)`` (or a tuple of them) as a tuple of ``(B, L, H)``."""
    parts = state if isinstance(state, tuple) else (state,)
    return tuple(part.transpose(0, 1) for part in parts)


def _layer_first(state: State) -> Tensor | tuple[Tensor, ...]:
    """The inverse of :func:`_batch_first`, contiguous, as torch.nn's layers want it."""
    parts = tuple(part.transpose(0, 1).contiguous() for part in state)
    return parts if len(parts) == 2 else parts[0]


class RecurrentEncoder(nn.Module):
    """Embedding and a recurrent stack over padded source sentences.

    Args:
        vocab_size: the source vocabulary's size.
        cell, impl: see :func:`recurrent_stack`.
        embed_dim, hidden_size, num_layers, dropout: E, H, L, and dropout on the embeddings
            and between layers.
        bidirectional: a backward cell per layer too (annotations of ``2H``).
        reverse_source: read each sentence from its last token to its first (Sutskever et al.
            2014, sec. 3.3).

    ``forward(tokens (B, S), lengths (B,)) -> (annotations (B, S, D·H), final state)``: zeros
    at padded positions (in the original order), the final state as the stack returns it
    (``(D·L, B, H)``, a tuple of two for an LSTM).
    """

    def __init__(
        self,
        vocab_size: int,
        cell: CellType,
        impl: Impl,
        embed_dim: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        reverse_source: bool = False,
    ) -> None:
        super().__init__()
        self.reverse_source = reverse_source
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(dropout)
        self.recurrent = recurrent_stack(
            cell, impl, embed_dim, hidden_size, num_layers, dropout, bidirectional
        )

    def forward(self, tokens: Tensor, lengths: Tensor):
        embedded = self.dropout(self.embedding(tokens))
        if self.reverse_source:
            embedded = reverse_padded(embedded, lengths)
        annotations, final = run_recurrent(self.recurrent, embedded, None, lengths)
        if self.reverse_source:
            annotations = reverse_padded(annotations, lengths)
        return annotations, final


class Seq2Seq(nn.Module):
    """Sutskever et al. (2014): the encoder's final state is the decoder's initial state.

    Encoder and decoder are stacks of the same cell and size; the decoder reads the embedded
    previous target token, ``h_t = RNN(E y_{t-1}, h_{t-1})`` with ``h_0`` (and ``c_0``) the
    encoder's final state layer by layer, and ``p(y_t) = softmax(W_o dropout(h_t) + b_o)``.
    Nothing else of the source reaches the decoder: the single-vector bottleneck.

    Args:
        source_vocab_size, target_vocab_size: from the data's two vocabularies.
        cell: ``"rnn"``, ``"lstm"`` (the paper's) or ``"gru"``.
        impl: ``"fused"`` (torch.nn, cuDNN on a GPU) or ``"scratch"`` (the lecture's cells).
        embed_dim: E, both embeddings.
        hidden_size: H.
        num_layers: L of both stacks (the paper's 4).
        dropout: on embeddings, between layers and before the read-out.
        reverse_source: read the source backwards (the paper's trick, on by default).

    Memory and state are ``(h,)`` or ``(h, c)`` with each ``(B, L, H)``.
    """

    uses_attention = False

    def __init__(
        self,
        source_vocab_size: int,
        target_vocab_size: int,
        cell: CellType = "lstm",
        impl: Impl = "fused",
        embed_dim: int = 256,
        hidden_size: int = 512,
        num_layers: int = 2,
        dropout: float = 0.2,
        reverse_source: bool = True,
    ) -> None:
        super().__init__()
        _check(cell, impl)
        self.encoder = RecurrentEncoder(
            source_vocab_size,
            cell,
            impl,
            embed_dim,
            hidden_size,
            num_layers,
            dropout,
            reverse_source=reverse_source,
        )
        self.embedding = nn.Embedding(target_vocab_size, embed_dim, padding_idx=PAD_ID)
        self.decoder = recurrent_stack(cell, impl, embed_dim, hidden_size, num_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, target_vocab_size)

    def prepare(self, tokens: Tensor, lengths: Tensor) -> Memory:
        """Source ``tokens (B, S)`` and ``lengths (B,)`` -> ``c``: the encoder's final state."""
        _, final = self.encoder(tokens, lengths)
        return _batch_first(final)

    def init_state(self, memory: Memory) -> State:
        """The decoder starts from ``c``."""
        return memory

    def _decode(self, inputs: Tensor, state: State) -> tuple[Tensor, State]:
        """Target ``inputs (B, T)`` from ``state`` -> logits ``(B, T, V)`` and the new state."""
        embedded = self.dropout(self.embedding(inputs))
        hidden, final = run_recurrent(self.decoder, embedded, _layer_first(state))
        return self.head(self.dropout(hidden)), _batch_first(final)

    def forward(self, tokens: Tensor, lengths: Tensor, inputs: Tensor) -> Seq2SeqOutput:
        """Teacher forcing: source ``(B, S)``, ``lengths (B,)``, target inputs ``(B, T)``
        (``<start> y_1 .. y_{T-1}``) -> logits ``(B, T, V)``."""
        logits, _ = self._decode(inputs, self.init_state(self.prepare(tokens, lengths)))
        return Seq2SeqOutput(logits, None)

    def step(
        self, tokens: Tensor, state: State, memory: Memory
    ) -> tuple[Tensor, State, Tensor | None]:
        """One token: ``tokens (B,)`` -> ``(logits (B, V), state, None)``."""
        logits, state = self._decode(tokens.unsqueeze(1), state)
        return logits[:, 0], state, None


class AdditiveAttention(nn.Module):
    """Bahdanau et al.'s alignment model: ``e_j = v^T tanh(W s + U h_j)``, softmax over the
    real tokens.

    ``project(annotations (B, S, A_in)) -> U h + b (B, S, A)`` is computed once per sentence;
    ``forward(query (B, Q), projected (B, S, A), valid (B, S) bool) -> α (B, S)``.

    The score is an MLP, not a scaled dot product, so
    :func:`~torch.nn.functional.scaled_dot_product_attention` cannot compute it (and the
    weights ``α`` themselves are returned, for the attention figures).
    """

    def __init__(self, query_dim: int, annotation_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.key = nn.Linear(annotation_dim, attention_dim)
        self.query = nn.Linear(query_dim, attention_dim, bias=False)
        self.score = nn.Linear(attention_dim, 1, bias=False)

    def project(self, annotations: Tensor) -> Tensor:
        return self.key(annotations)

    def forward(self, query: Tensor, projected: Tensor, valid: Tensor) -> Tensor:
        energy = self.score(torch.tanh(projected + self.query(query).unsqueeze(1))).squeeze(-1)
        return energy.masked_fill(~valid, float("-inf")).softmax(dim=-1)


class AttentionSeq2Seq(nn.Module):
    """Bahdanau et al. (2015): a new context vector over the source annotations at every step.

    Args:
        source_vocab_size, target_vocab_size: from the data's two vocabularies.
        cell: ``"gru"`` (the paper's gated unit), ``"lstm"`` or ``"rnn"``, for both sides.
        impl: ``"fused"`` or ``"scratch"``.
        embed_dim: E, both embeddings.
        hidden_size: n, the decoder's state (and each encoder direction's).
        attention_dim: the alignment model's width (the paper's n').
        readout_dim: l, the maxout read-out's width (``2l`` pre-activations, pairs maxed).
        num_encoder_layers: stacked bidirectional layers (the paper's 1).
        bidirectional: False gives a forward-only encoder (``s_0`` then comes from its last
            state).
        dropout: on embeddings, between encoder layers and before ``W_o``.

    Memory is ``(h (B, S, D·n), U h + b (B, S, A), valid (B, S) bool, summary (B, n))`` with
    ``summary`` the last layer's ``h←_1`` (or ``h→_S``); state is ``(s,)`` or ``(s, c)``.
    """

    uses_attention = True

    def __init__(
        self,
        source_vocab_size: int,
        target_vocab_size: int,
        cell: CellType = "gru",
        impl: Impl = "fused",
        embed_dim: int = 256,
        hidden_size: int = 512,
        attention_dim: int = 512,
        readout_dim: int = 256,
        num_encoder_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        _check(cell, impl)
        self.cell = cell
        directions = 2 if bidirectional else 1
        annotation_dim = directions * hidden_size
        self.encoder = RecurrentEncoder(
            source_vocab_size,
            cell,
            impl,
            embed_dim,
            hidden_size,
            num_encoder_layers,
            dropout,
            bidirectional=bidirectional,
        )
        self.init_h = nn.Linear(hidden_size, hidden_size)
        self.init_c = nn.Linear(hidden_size, hidden_size) if cell == "lstm" else None
        self.attention = AdditiveAttention(hidden_size, annotation_dim, attention_dim)
        self.embedding = nn.Embedding(target_vocab_size, embed_dim, padding_idx=PAD_ID)
        self.recurrent = recurrent_cell(cell, impl, embed_dim + annotation_dim, hidden_size)
        self.readout = nn.Linear(hidden_size + embed_dim + annotation_dim, 2 * readout_dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(readout_dim, target_vocab_size)

    def prepare(self, tokens: Tensor, lengths: Tensor) -> Memory:
        """Source ``tokens (B, S)`` and ``lengths (B,)`` -> the annotations, their projection,
        the mask of real tokens and the summary that gives ``s_0``."""
        annotations, final = self.encoder(tokens, lengths)
        last_layer = (final[0] if isinstance(final, tuple) else final)[-1]
        valid = torch.arange(tokens.shape[1], device=tokens.device) < lengths.unsqueeze(1)
        return annotations, self.attention.project(annotations), valid, last_layer

    def init_state(self, memory: Memory) -> State:
        """``s_0 = tanh(W_s h←_1 + b)`` (and ``c_0 = W_c h←_1 + b`` for an LSTM)."""
        summary = memory[3]
        h0 = torch.tanh(self.init_h(summary))
        return (h0,) if self.init_c is None else (h0, self.init_c(summary))

    def _advance(
        self, embedded: Tensor, state: State, memory: Memory
    ) -> tuple[Tensor, State, Tensor]:
        """One step from ``E y_{i-1} (B, E)``: logits ``(B, V)``, the new state, ``α_i (B, S)``."""
        annotations, projected, valid, _ = memory
        weights = self.attention(state[0], projected, valid)
        context = torch.einsum("bs,bsd->bd", weights, annotations)
        state = step_cell(self.recurrent, torch.cat([embedded, context], dim=-1), state)
        readout = self.readout(torch.cat([state[0], embedded, context], dim=-1))
        maxout = readout.view(*readout.shape[:-1], -1, 2).amax(dim=-1)
        return self.head(self.dropout(maxout)), state, weights

    def forward(self, tokens: Tensor, lengths: Tensor, inputs: Tensor) -> Seq2SeqOutput:
        """Teacher forcing: source ``(B, S)``, ``lengths (B,)``, target inputs ``(B, T)`` ->
        logits ``(B, T, V)`` and attention ``(B, T, S)``."""
        memory = self.prepare(tokens, lengths)
        state = self.init_state(memory)
        embedded = self.dropout(self.embedding(inputs))
        logits, weights = [], []
        for t in range(inputs.shape[1]):
            step_logits, state, step_weights = self._advance(embedded[:, t], state, memory)
            logits.append(step_logits)
            weights.append(step_weights)
        return Seq2SeqOutput(torch.stack(logits, dim=1), torch.stack(weights, dim=1))

    def step(
        self, tokens: Tensor, state: State, memory: Memory
    ) -> tuple[Tensor, State, Tensor | None]:
        """One token: ``tokens (B,)`` -> ``(logits (B, V), state, α (B, S))``."""
        return self._advance(self.dropout(self.embedding(tokens)), state, memory)


__all__ = [
    "AdditiveAttention",
    "AttentionSeq2Seq",
    "Memory",
    "RecurrentEncoder",
    "Seq2Seq",
    "Seq2SeqOutput",
    "State",
    "recurrent_cell",
    "recurrent_stack",
    "step_cell",
]
