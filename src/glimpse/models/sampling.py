"""Autoregressive sampling for language models with a ``generation_step`` method.

``generation_step(idx (B, t), cache) -> (logits (B, V), cache)`` feeds new tokens after what
the cache remembers: the hidden state of a recurrent model, the context window of a
Transformer. Sampling is softmax(logits / temperature), restricted to the top-k logits.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class Generative(Protocol):
    def generation_step(self, idx: Tensor, cache): ...


def filter_top_k(logits: Tensor, top_k: int | None) -> Tensor:
    """Set every logit below the k-th largest of its row to -inf. ``(B, V) -> (B, V)``."""
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


@torch.no_grad()
def sample_tokens(
    model: Generative,
    prompt: Tensor,
    num_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continue ``prompt (B, t0)`` by ``num_tokens`` sampled tokens; returns ``(B, num_tokens)``.

    ``temperature=0`` picks the most likely token (greedy decoding).
    """
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError("The prompt must hold at least one token per row, shape (B, t0).")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}.")
    logits, cache = model.generation_step(prompt, None)
    generated = []
    for position in range(num_tokens):
        if temperature == 0:
            next_token = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = torch.softmax(filter_top_k(logits.float() / temperature, top_k), dim=-1)
            next_token = torch.multinomial(probs, 1, generator=generator)
        generated.append(next_token)
        if position + 1 < num_tokens:
            logits, cache = model.generation_step(next_token, cache)
    return torch.cat(generated, dim=1) if generated else prompt.new_empty(prompt.shape[0], 0)
