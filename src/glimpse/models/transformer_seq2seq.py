"""The original encoder-decoder Transformer (Vaswani et al. 2017, "Attention is all you need").

``source (B, S)`` -> embedding ``· sqrt(D)`` + sinusoidal positions -> N encoder layers of
self-attention (the source's padding masked) and a position-wise feed-forward network ->
memory ``(B, S, D)``. ``target inputs (B, T)`` -> embedding ``· sqrt(D)`` + positions -> N
decoder layers of causal self-attention, cross-attention over the memory and the feed-forward
network -> logits ``(B, T, V)`` through the transposed target embedding (tied weights, sec. 3.4).

Each sub-layer is ``LayerNorm(x + Dropout(Sublayer(x)))`` as in the paper (post-norm); with
``norm_first`` it is ``x + Dropout(Sublayer(LayerNorm(x)))`` (pre-norm, Xiong et al. 2020) with
a final LayerNorm after each stack. Attention is ``softmax(Q K^T / sqrt(d_k)) V`` per head
(eq. 1) through :func:`torch.nn.functional.scaled_dot_product_attention`; the positions are
``PE(p, 2i) = sin(p / 10000^(2i/D))``, ``PE(p, 2i+1) = cos(p / 10000^(2i/D))`` (sec. 3.5).

Parameter names are torch.nn.Transformer's (``encoder.layers.0.self_attn.in_proj_weight``,
``decoder.layers.0.multihead_attn.out_proj.weight``, ``linear1``, ``norm3``, ...), so a
torch.nn.Transformer state dict loads as it is and the two compute the same function.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.models.seq2seq import PAD_ID, Memory, Seq2SeqOutput, State

Activation = Literal["relu", "gelu"]


def sinusoidal_positions(
    length: int, dim: int, device: torch.device | None = None, offset: int = 0
) -> Tensor:
    """The sinusoidal encodings of positions ``offset .. offset + length - 1``: ``(length, D)``."""
    positions = torch.arange(offset, offset + length, device=device, dtype=torch.float32)
    frequencies = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    angles = positions.unsqueeze(1) * frequencies
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return table


class MultiHeadAttention(nn.Module):
    """``MultiHead(Q, K, V) = Concat(head_1..head_h) W^O``, ``head_i = Attention(Q W_i^Q, K W_i^K,
    V W_i^V)`` (sec. 3.2.2), with torch.nn.MultiheadAttention's parameters: ``in_proj_weight
    (3D, D)`` stacking ``W^Q, W^K, W^V``, ``in_proj_bias`` and ``out_proj``.

    Tensors are ``(B, L, D)``; heads are ``(B, h, L, D/h)``.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model.net.dim={dim} is not divisible by num_heads={num_heads}.")
        self.dim, self.num_heads, self.dropout = dim, num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def project_query(self, x: Tensor) -> Tensor:
        """``x W^Q + b`` as heads."""
        return self._heads(
            F.linear(x, self.in_proj_weight[: self.dim], self.in_proj_bias[: self.dim])
        )

    def project_key_value(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x W^K + b, x W^V + b)`` as heads."""
        kv = F.linear(x, self.in_proj_weight[self.dim :], self.in_proj_bias[self.dim :])
        key, value = kv.chunk(2, dim=-1)
        return self._heads(key), self._heads(value)

    def project_all(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``Q, K, V`` of self-attention in one matrix product."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attention of the heads ``q (B, h, Lq, d)`` over ``k, v (B, h, Lk, d)``, then ``W^O``.

        ``mask`` is bool, True where a key may be attended (``(B, 1, 1, Lk)`` for padding).
        With ``need_weights`` (inference only) the weights are computed explicitly and returned
        averaged over the heads, ``(B, Lq, Lk)``.
        """
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            if is_causal:
                causal = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device)
                scores = scores.masked_fill(~causal.tril(k.shape[2] - q.shape[2]), float("-inf"))
            probabilities = scores.softmax(dim=-1)
            out = probabilities @ v
            weights = probabilities.mean(dim=1)
        else:
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=is_causal,
            )
        return self.out_proj(out.transpose(1, 2).flatten(2)), weights


class FeedForwardSublayer(nn.Module):
    """What both layer kinds share: ``FFN(x) = W_2 act(W_1 x + b_1) + b_2`` (eq. 2) with
    torch.nn's names (``linear1``, ``linear2``, ``dropout`` on the hidden activations)."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float, activation: Activation) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.activation = {"relu": F.relu, "gelu": F.gelu}[activation]

    def feed_forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class EncoderLayer(FeedForwardSublayer):
    """Self-attention and the feed-forward network, each wrapped in a residual and LayerNorm
    (post-norm, the paper's; pre-norm with ``norm_first``). ``(B, S, D) -> (B, S, D)``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        activation: Activation = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__(dim, ffn_dim, dropout, activation)
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _attention(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.dropout1(self.self_attn.attend(*self.self_attn.project_all(x), mask)[0])

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x (B, S, D)``; ``mask (B, 1, 1, S)`` bool, True at real tokens, or None."""
        if self.norm_first:
            x = x + self._attention(self.norm1(x), mask)
            return x + self.dropout2(self.feed_forward(self.norm2(x)))
        x = self.norm1(x + self._attention(x, mask))
        return self.norm2(x + self.dropout2(self.feed_forward(x)))


class DecoderLayer(FeedForwardSublayer):
    """Causal self-attention, cross-attention over the encoder's memory and the feed-forward
    network, each with a residual and LayerNorm (``norm1..3``). ``(B, T, D) -> (B, T, D)``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        activation: Activation = "relu",
        norm_first: bool = False,
    ) -> None:
        super().__init__(dim, ffn_dim, dropout, activation)
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.multihead_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def _self_attention(
        self, x: Tensor, cache: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Causal self-attention of ``x``; with ``cache`` (the keys and values of the earlier
        positions, ``(B, h, t, d)`` each) ``x`` is the one next position, which attends to all."""
        q, k, v = self.self_attn.project_all(x)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        out, _ = self.self_attn.attend(q, k, v, is_causal=cache is None)
        return self.dropout1(out), (k, v)

    def _cross_attention(
        self, x: Tensor, memory_kv: tuple[Tensor, Tensor], mask: Tensor, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        q = self.multihead_attn.project_query(x)
        out, weights = self.multihead_attn.attend(q, *memory_kv, mask, need_weights=need_weights)
        return self.dropout2(out), weights

    def forward(
        self,
        x: Tensor,
        memory_kv: tuple[Tensor, Tensor],
        mask: Tensor,
        cache: tuple[Tensor, Tensor] | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor | None]:
        """``x (B, T, D)``, the memory's keys and values (:meth:`MultiHeadAttention.
        project_key_value`), its mask ``(B, 1, 1, S)`` -> ``(x, self-attention keys and values,
        cross-attention weights (B, T, S) or None)``."""
        if self.norm_first:
            attended, cache = self._self_attention(self.norm1(x), cache)
            x = x + attended
            crossed, weights = self._cross_attention(self.norm2(x), memory_kv, mask, need_weights)
            x = x + crossed
            return x + self.dropout3(self.feed_forward(self.norm3(x))), cache, weights
        attended, cache = self._self_attention(x, cache)
        x = self.norm1(x + attended)
        crossed, weights = self._cross_attention(x, memory_kv, mask, need_weights)
        x = self.norm2(x + crossed)
        return self.norm3(x + self.dropout3(self.feed_forward(x))), cache, weights


class Encoder(nn.Module):
    """N :class:`EncoderLayer`; ``norm`` is the final LayerNorm of a pre-norm stack, else None."""

    def __init__(self, layers: list[EncoderLayer], norm: nn.LayerNorm | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x if self.norm is None else self.norm(x)


class Decoder(nn.Module):
    """N :class:`DecoderLayer` and, for pre-norm, a final LayerNorm ``norm``."""

    def __init__(self, layers: list[DecoderLayer], norm: nn.LayerNorm | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm


class TransformerSeq2Seq(nn.Module):
    """Encoder-decoder Transformer for translation.

    Args:
        source_vocab_size, target_vocab_size: from the data's vocabularies.
        dim: d_model (the paper's base model: 512).
        num_heads: h (8).
        num_encoder_layers, num_decoder_layers: N (6 each).
        ffn_dim: d_ff (2048).
        dropout: P_drop on the embeddings' sums, every sub-layer's output, the attention
            weights and the feed-forward hidden layer (0.1).
        norm_first: pre-norm instead of the paper's post-norm.
        activation: ``"relu"`` (the paper's) or ``"gelu"``.

    Memory is ``(memory (B, S, D), mask (B, 1, 1, S), K_1, V_1, .., K_N, V_N)`` with each
    decoder layer's cross-attention keys and values ``(B, h, S, D/h)`` computed once; the state
    is every decoder layer's self-attention keys and values of the positions so far.
    """

    uses_attention = True

    def __init__(
        self,
        source_vocab_size: int,
        target_vocab_size: int,
        dim: int = 512,
        num_heads: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        norm_first: bool = False,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"Unknown model.net.activation={activation!r}; choose relu or gelu.")
        self.dim, self.num_heads = dim, num_heads
        layer_args = (dim, num_heads, ffn_dim, dropout, activation, norm_first)
        self.encoder = Encoder(
            [EncoderLayer(*layer_args) for _ in range(num_encoder_layers)],
            nn.LayerNorm(dim) if norm_first else None,
        )
        self.decoder = Decoder(
            [DecoderLayer(*layer_args) for _ in range(num_decoder_layers)],
            nn.LayerNorm(dim) if norm_first else None,
        )
        self.source_embedding = nn.Embedding(source_vocab_size, dim, padding_idx=PAD_ID)
        self.target_embedding = nn.Embedding(target_vocab_size, dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(dropout)
        for layer in (*self.encoder.layers, *self.decoder.layers):
            for module in layer.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
        for embedding in (self.source_embedding, self.target_embedding):
            nn.init.normal_(embedding.weight, std=dim**-0.5)
            with torch.no_grad():
                embedding.weight[PAD_ID].zero_()

    def embed(self, embedding: nn.Embedding, tokens: Tensor, offset: int = 0) -> Tensor:
        """``E x · sqrt(D) + PE`` with dropout (sec. 3.4, 3.5); positions from ``offset``."""
        positions = sinusoidal_positions(tokens.shape[1], self.dim, tokens.device, offset)
        return self.dropout(embedding(tokens) * math.sqrt(self.dim) + positions)

    def logits(self, hidden: Tensor) -> Tensor:
        """The pre-softmax projection shares the target embedding's weights."""
        return hidden @ self.target_embedding.weight.T

    def encode(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Source ``(B, S)`` and ``lengths (B,)`` -> ``(memory (B, S, D), mask (B, 1, 1, S))``."""
        valid = torch.arange(tokens.shape[1], device=tokens.device) < lengths.unsqueeze(1)
        mask = valid[:, None, None, :]
        return self.encoder(self.embed(self.source_embedding, tokens), mask), mask

    def _decode(
        self,
        x: Tensor,
        memory_kv: list[tuple[Tensor, Tensor]],
        mask: Tensor,
        caches: list[tuple[Tensor, Tensor]] | None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]], Tensor | None]:
        """Run the decoder stack over embedded targets; the last layer's cross-attention weights
        when ``need_weights``."""
        new_caches, weights = [], None
        for index, layer in enumerate(self.decoder.layers):
            cache = None if caches is None else caches[index]
            last = index == len(self.decoder.layers) - 1
            x, kv, layer_weights = layer(x, memory_kv[index], mask, cache, need_weights and last)
            new_caches.append(kv)
            weights = layer_weights if last else weights
        if self.decoder.norm is not None:
            x = self.decoder.norm(x)
        return x, new_caches, weights

    def forward(self, tokens: Tensor, lengths: Tensor, inputs: Tensor) -> Seq2SeqOutput:
        """Teacher forcing: source ``(B, S)``, ``lengths (B,)``, target inputs ``(B, T)`` ->
        logits ``(B, T, V)``."""
        memory, mask = self.encode(tokens, lengths)
        memory_kv = [
            layer.multihead_attn.project_key_value(memory) for layer in self.decoder.layers
        ]
        hidden, _, _ = self._decode(
            self.embed(self.target_embedding, inputs), memory_kv, mask, None
        )
        return Seq2SeqOutput(self.logits(hidden), None)

    def prepare(self, tokens: Tensor, lengths: Tensor) -> Memory:
        """The encoder's memory, its mask and every decoder layer's cross-attention keys and
        values, computed once per sentence."""
        memory, mask = self.encode(tokens, lengths)
        kv = [
            part
            for layer in self.decoder.layers
            for part in layer.multihead_attn.project_key_value(memory)
        ]
        return (memory, mask, *kv)

    def init_state(self, memory: Memory) -> State:
        """No target position decoded yet: empty keys and values ``(B, h, 0, D/h)`` per layer."""
        batch = memory[0].shape[0]
        empty = memory[0].new_zeros(batch, self.num_heads, 0, self.dim // self.num_heads)
        return tuple(empty for _ in range(2 * len(self.decoder.layers)))

    def step(
        self, tokens: Tensor, state: State, memory: Memory
    ) -> tuple[Tensor, State, Tensor | None]:
        """One token ``(B,)`` at position ``t`` (the cache's length) -> ``(logits (B, V), state
        with position t appended, the last layer's cross-attention over the source (B, S))``."""
        _, mask, *kv = memory
        memory_kv = list(zip(kv[0::2], kv[1::2], strict=True))
        caches = list(zip(state[0::2], state[1::2], strict=True))
        x = self.embed(self.target_embedding, tokens.unsqueeze(1), offset=state[0].shape[2])
        hidden, caches, weights = self._decode(x, memory_kv, mask, caches, need_weights=True)
        state = tuple(part for cache in caches for part in cache)
        return self.logits(hidden[:, 0]), state, weights[:, 0]


__all__ = [
    "DecoderLayer",
    "EncoderLayer",
    "FeedForwardSublayer",
    "MultiHeadAttention",
    "TransformerSeq2Seq",
    "sinusoidal_positions",
]
