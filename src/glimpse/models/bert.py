"""BERT: a bidirectional Transformer encoder trained by masked language modelling (Devlin et al.
2019, "BERT: Pre-training of deep bidirectional transformers for language understanding").

``tokens (B, T)`` -> token + learned position embeddings -> LayerNorm -> dropout -> N post-norm
encoder layers with GELU (:class:`~glimpse.models.transformer_seq2seq.EncoderLayer`, every
position attending to every other) -> the MLM head ``LayerNorm(GELU(W h + b)) E^T + b_V``, whose
output projection is the token embedding (tied, as in BERT's ``cls.predictions``) -> logits
``(B, T, V)``.

Only the masked-LM objective is kept: the next-sentence prediction and the segment embeddings
it needs are left out (a single segment's embedding is a constant that the position table can
absorb; RoBERTa, Liu et al. 2019, found NSP unnecessary).

:func:`mask_tokens` is BERT's corruption (sec. 3.1, "Task #1: Masked LM"): 15 % of the positions
are selected for prediction; of those, 80 % are replaced by ``[MASK]``, 10 % by a random token
and 10 % left unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.models.transformer_seq2seq import EncoderLayer

#: The label of positions that are not predicted (``cross_entropy``'s default ``ignore_index``).
IGNORE = -100
#: BERT's LayerNorm epsilon and initializer range.
LAYER_NORM_EPS = 1e-12
INIT_STD = 0.02


def mask_tokens(
    tokens: Tensor,
    mask_id: int,
    random_ids: tuple[int, int],
    select_prob: float = 0.15,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masked-LM corruption of ``tokens (B, T)`` int64.

    Each position is selected independently with ``select_prob``; a selected position becomes
    ``mask_id`` with ``mask_prob``, a token drawn uniformly from ``random_ids = (low, high)``
    (``low <= id < high``) with ``random_prob``, and stays as it is otherwise. The draws come
    from ``generator`` (on the CPU; the results are moved to ``tokens``' device).

    Returns ``(inputs, labels)``, both ``(B, T)``: the corrupted tokens, and the original token
    at the selected positions, :data:`IGNORE` elsewhere.
    """
    if not 0 < select_prob <= 1 or mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1:
        raise ValueError(
            f"Masking probabilities select={select_prob}, mask={mask_prob}, random={random_prob} "
            "need 0 < select <= 1 and mask + random <= 1."
        )
    low, high = random_ids
    shape = tokens.shape
    selected = torch.rand(shape, generator=generator) < select_prob
    decision = torch.rand(shape, generator=generator)
    masked = selected & (decision < mask_prob)
    randomised = selected & (decision >= mask_prob) & (decision < mask_prob + random_prob)
    replacement = torch.randint(low, high, shape, generator=generator)
    selected, masked, randomised, replacement = (
        t.to(tokens.device) for t in (selected, masked, randomised, replacement)
    )
    inputs = torch.where(masked, torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(randomised, replacement, inputs)
    labels = torch.where(selected, tokens, torch.full_like(tokens, IGNORE))
    return inputs, labels


class Bert(nn.Module):
    """A BERT encoder with its masked-LM head.

    Args:
        vocab_size: V, the symbols plus ``[MASK]``.
        max_len: the longest sequence the learned position table covers.
        dim: H (BERT-base: 768).
        num_layers: L (12).
        num_heads: A (12).
        ffn_dim: the feed-forward size (4H).
        dropout: on the embeddings, attention weights and every sub-layer's output (0.1).
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int = 128,
        dim: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        ffn_dim: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.vocab_size, self.max_len = vocab_size, max_len
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Embedding(max_len, dim)
        self.embedding_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(dim, num_heads, ffn_dim, dropout, "gelu", False, LAYER_NORM_EPS)
            for _ in range(num_layers)
        )
        self.head_transform = nn.Linear(dim, dim)
        self.head_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.head_bias = nn.Parameter(torch.zeros(vocab_size))
        self.apply(self._init_weights)
        for layer in self.layers:
            nn.init.normal_(layer.self_attn.in_proj_weight, std=INIT_STD)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """BERT's initialisation: N(0, 0.02) weights and embeddings, zero biases."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def encode(self, tokens: Tensor) -> Tensor:
        """``tokens (B, T)`` -> the last layer's hidden states ``(B, T, H)``."""
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(
                f"A sequence of {length} tokens is longer than the model's max_len "
                f"{self.max_len} (the data's seq_len when it was trained)."
            )
        positions = torch.arange(length, device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        x = self.dropout(self.embedding_norm(x))
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens (B, T)`` -> MLM logits ``(B, T, V)``."""
        hidden = self.head_norm(F.gelu(self.head_transform(self.encode(tokens))))
        return hidden @ self.token_embedding.weight.T + self.head_bias


__all__ = ["IGNORE", "Bert", "mask_tokens"]
