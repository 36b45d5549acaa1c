"""Character-level recurrent language model (Karpathy's char-rnn, lecture 9's first example).

``idx (B, T)`` -> embedding ``(B, T, E)`` -> L recurrent layers ``(B, T, H)`` -> dropout ->
linear head ``y_t = W_hy h_t`` giving logits ``(B, T, V)`` over the next character.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from glimpse.models.recurrent import CellType, ScratchRecurrent, fused_recurrent

RecurrentState = Tensor | tuple[Tensor, Tensor]


class CharRNN(nn.Module):
    """Embedding, a stack of RNN/LSTM/GRU layers, and a linear read-out.

    Args:
        vocab_size: V, the number of symbols (from the DataSpec's vocabulary).
        cell: ``"rnn"`` (Elman), ``"lstm"`` or ``"gru"``.
        impl: ``"scratch"`` runs the lecture's equations step by step
            (:mod:`glimpse.models.recurrent`); ``"fused"`` runs torch.nn.RNN/LSTM/GRU
            (cuDNN on a GPU). Both hold the same function of the weights (see the mapping
            functions in :mod:`glimpse.models.recurrent`).
        embedding_dim: E.
        hidden_size: H.
        num_layers: L.
        dropout: between recurrent layers and before the read-out.
        reset_after: GRU only. False is the slide's candidate ``tanh(W x + U (r ⊙ h))``;
            True is cuDNN's ``tanh(W x + r ⊙ (U h + b))``, which the fused GRU requires.
    """

    def __init__(
        self,
        vocab_size: int,
        cell: CellType = "lstm",
        impl: Literal["scratch", "fused"] = "fused",
        embedding_dim: int = 64,
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
        reset_after: bool = True,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.impl = impl
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        if impl == "scratch":
            self.recurrent = ScratchRecurrent(
                cell, embedding_dim, hidden_size, num_layers, dropout, reset_after
            )
        elif impl == "fused":
            if cell == "gru" and not reset_after:
                raise ValueError(
                    "model.net.impl=fused uses torch.nn.GRU, which applies the reset gate after "
                    "U_h; set model.net.reset_after=true, or use model.net.impl=scratch for the "
                    "slide's form."
                )
            self.recurrent = fused_recurrent(cell, embedding_dim, hidden_size, num_layers, dropout)
        else:
            raise ValueError(f"Unknown model.net.impl={impl!r}; choose scratch or fused.")
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(
        self, idx: Tensor, state: RecurrentState | None = None
    ) -> tuple[Tensor, RecurrentState]:
        """``idx (B, T)`` and the carried state -> ``(logits (B, T, V), new state)``."""
        hidden, state = self.recurrent(self.embedding(idx), state)
        return self.head(self.dropout(hidden)), state

    def generation_step(
        self, idx: Tensor, cache: RecurrentState | None
    ) -> tuple[Tensor, RecurrentState]:
        """Feed ``idx (B, t)`` after the carried state; return the last logits ``(B, V)``."""
        logits, state = self(idx, cache)
        return logits[:, -1], state


def detach_state(state: RecurrentState | None) -> RecurrentState | None:
    """Cut the graph behind a carried state (truncated backpropagation through time)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["CharRNN", "RecurrentState", "count_parameters", "detach_state"]
