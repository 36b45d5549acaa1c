"""Top-k filtering and autoregressive sampling."""

from __future__ import annotations

import pytest
import torch

from glimpse.models.char_rnn import CharRNN
from glimpse.models.char_transformer import CharTransformer
from glimpse.models.sampling import filter_top_k, sample_tokens

B, V, PROMPT = 2, 20, 3


def _char_rnn() -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(V, "lstm", "fused", embedding_dim=8, hidden_size=16, num_layers=1).eval()


def _char_transformer() -> CharTransformer:
    torch.manual_seed(1)
    model = CharTransformer(V, block_size=5, dim=8, num_layers=1, num_heads=2).eval()
    with torch.no_grad():  # GPT init gives near-uniform logits; widen them.
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model


MODELS = {"char_rnn": _char_rnn, "char_transformer": _char_transformer}


def _prompt(seed: int = 2) -> torch.Tensor:
    return torch.randint(0, V, (B, PROMPT), generator=torch.Generator().manual_seed(seed))


class Recorder:
    """Wraps a model and records the logits its generation_step returns."""

    def __init__(self, model) -> None:
        self.model = model
        self.logits: list[torch.Tensor] = []

    def generation_step(self, idx, cache):
        logits, cache = self.model.generation_step(idx, cache)
        self.logits.append(logits.clone())
        return logits, cache


def test_filter_top_k_keeps_the_k_largest_per_row():
    """Exactly the k largest logits of each row survive unchanged; the rest are -inf."""
    logits = torch.randn(4, 9, generator=torch.Generator().manual_seed(3))
    k = 3
    filtered = filter_top_k(logits, k)
    assert filtered.shape == logits.shape
    for row, out in zip(logits, filtered, strict=True):
        kept = torch.isfinite(out)
        assert set(kept.nonzero().flatten().tolist()) == set(row.topk(k).indices.tolist())
        assert torch.equal(out[kept], row[kept])
        assert (out[~kept] == float("-inf")).all()


@pytest.mark.parametrize("top_k", [None, 9, 12])
def test_filter_top_k_without_effect_returns_input(top_k):
    """top_k None or >= V leaves the logits as they are."""
    logits = torch.randn(4, 9)
    assert torch.equal(filter_top_k(logits, top_k), logits)


@pytest.mark.parametrize("top_k", [0, -1])
def test_filter_top_k_below_one_raises(top_k):
    """top_k < 1 is refused."""
    with pytest.raises(ValueError, match="top_k"):
        filter_top_k(torch.randn(2, 5), top_k)


def test_same_seed_same_tokens_different_seed_different_tokens():
    """A seeded generator makes sampling reproducible; another seed gives other tokens."""
    model, prompt = _char_rnn(), _prompt()

    def draw(seed: int) -> torch.Tensor:
        return sample_tokens(model, prompt, 50, generator=torch.Generator().manual_seed(seed))

    first, again, other = draw(10), draw(10), draw(11)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", list(MODELS))
def test_top_k_one_equals_greedy(name):
    """Sampling from the single best token is greedy decoding."""
    model, prompt = MODELS[name](), _prompt()
    gen = torch.Generator().manual_seed(12)
    sampled = sample_tokens(model, prompt, 12, temperature=1.5, top_k=1, generator=gen)
    assert torch.equal(sampled, sample_tokens(model, prompt, 12, temperature=0))


@pytest.mark.parametrize("name", list(MODELS))
def test_top_k_samples_lie_in_top_k(name):
    """Every sampled token is among the k largest logits of its step."""
    k, num_tokens = 3, 30
    recorder = Recorder(MODELS[name]())
    gen = torch.Generator().manual_seed(13)
    tokens = sample_tokens(recorder, _prompt(), num_tokens, top_k=k, generator=gen)
    assert len(recorder.logits) == num_tokens
    for step, logits in enumerate(recorder.logits):
        top = logits.topk(k, dim=-1).indices
        assert (top == tokens[:, step : step + 1]).any(dim=-1).all(), f"step {step}"


@pytest.mark.parametrize("name", list(MODELS))
def test_temperature_zero_is_deterministic_greedy(name):
    """temperature=0 takes the argmax of the full-sequence forward at every step."""
    model, prompt, num_tokens = MODELS[name](), _prompt(), 8
    tokens = sample_tokens(model, prompt, num_tokens, temperature=0)
    assert torch.equal(tokens, sample_tokens(model, prompt, num_tokens, temperature=0))
    sequence = prompt
    with torch.no_grad():
        for _ in range(num_tokens):
            context = sequence
            if isinstance(model, CharTransformer):
                context = sequence[:, -model.block_size :]
            logits, _ = model(context)
            sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(tokens, sequence[:, PROMPT:])


def test_negative_temperature_raises():
    """temperature < 0 is refused."""
    with pytest.raises(ValueError, match="temperature"):
        sample_tokens(_char_rnn(), _prompt(), 4, temperature=-0.5)


@pytest.mark.parametrize("prompt", [torch.zeros(B, 0, dtype=torch.long), torch.zeros(3).long()])
def test_empty_or_flat_prompt_raises(prompt):
    """A prompt must be (B, t0) with t0 >= 1."""
    with pytest.raises(ValueError, match="prompt"):
        sample_tokens(_char_rnn(), prompt, 4)


@pytest.mark.parametrize("name", list(MODELS))
def test_zero_tokens_gives_empty_rows(name):
    """num_tokens=0 returns an empty (B, 0) tensor."""
    tokens = sample_tokens(MODELS[name](), _prompt(), 0)
    assert tokens.shape == (B, 0)
    assert tokens.dtype == torch.long


@pytest.mark.parametrize("name", list(MODELS))
def test_sample_shape_for_both_models(name):
    """Both models sample (B, num_tokens) in-vocabulary tokens, past the transformer's block."""
    num_tokens = 9  # longer than the transformer's block_size of 5
    gen = torch.Generator().manual_seed(14)
    tokens = sample_tokens(MODELS[name](), _prompt(), num_tokens, top_k=5, generator=gen)
    assert tokens.shape == (B, num_tokens)
    assert tokens.dtype == torch.long
    assert ((tokens >= 0) & (tokens < V)).all()
