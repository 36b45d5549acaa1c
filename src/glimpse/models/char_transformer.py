"""Decoder-only Transformer character model (GPT; Radford et al. 2018, Vaswani et al. 2017).

``idx (B, T)`` -> token + learned position embeddings ``(B, T, D)`` -> N pre-norm blocks
``x = x + Attn(LN(x)); x = x + MLP(LN(x))`` with causal self-attention -> LN -> logits
``(B, T, V)`` through the transposed token embedding (tied weights, Press & Wolf 2017).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions <= t.

    ``softmax(Q K^T / sqrt(d_head) + M) V`` per head, with ``M`` the causal mask, computed by
    :func:`torch.nn.functional.scaled_dot_product_attention` (flash/efficient kernels).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model.net.dim={dim} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, D) -> (B, T, D)``."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).split(dim, dim=2)
        q, k, v = (
            t.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)
            for t in (q, k, v)
        )
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0, is_causal=True
        )
        out = out.transpose(1, 2).reshape(batch, length, dim)
        return self.resid_dropout(self.proj(out))


class Block(nn.Module):
    """Pre-norm Transformer block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``, MLP 4x GELU."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, num_heads, dropout)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CharTransformer(nn.Module):
    """GPT-style character model.

    Args:
        vocab_size: V.
        block_size: the longest context T the position table covers.
        dim: D, the model width.
        num_layers: N blocks.
        num_heads: attention heads per block.
        dropout: on embeddings, attention weights and residual branches.
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 128,
        dim: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Embedding(block_size, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, num_heads, dropout) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight
        self.apply(self._init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * num_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2 initialisation: N(0, 0.02) weights, zero biases."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: Tensor, state: None = None) -> tuple[Tensor, None]:
        """``idx (B, T)`` with ``T <= block_size`` -> ``(logits (B, T, V), None)``.

        ``state`` is accepted and ignored so recurrent and attention models share a signature.
        """
        length = idx.shape[1]
        if length > self.block_size:
            raise ValueError(
                f"Sequence of {length} tokens is longer than the model's block_size "
                f"{self.block_size}; lower data.seq_len or raise model.net.block_size."
            )
        positions = torch.arange(length, device=idx.device)
        x = self.dropout(self.token_embedding(idx) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x)), None

    def generation_step(self, idx: Tensor, cache: Tensor | None) -> tuple[Tensor, Tensor]:
        """Append ``idx (B, t)`` to the context ``cache``, crop it to ``block_size`` and return
        the last logits ``(B, V)`` with the new context."""
        context = idx if cache is None else torch.cat([cache, idx], dim=1)
        context = context[:, -self.block_size :]
        logits, _ = self(context)
        return logits[:, -1], context
