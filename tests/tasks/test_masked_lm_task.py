"""The masked-LM task: [MASK] is one token of a prompt, evaluation masks the same way each time,
and a small BERT learns to fill in a repetitive text."""

from __future__ import annotations

import pytest
import torch

from glimpse.batches import TEXT
from glimpse.data.spec import DataSpec
from glimpse.data.text.vocab import CharVocab
from glimpse.errors import ConfigError
from glimpse.prediction import PredictionInputs
from glimpse.tasks.masked_lm import MASK_TOKEN, MaskedLanguageModelTask

TEXT_TRAINED = "abcdefgh " * 200
NET = {
    "_target_": "glimpse.models.bert.Bert",
    "dim": 32,
    "num_layers": 2,
    "num_heads": 2,
    "ffn_dim": 64,
    "dropout": 0.0,
}


def _task(seq_len: int = 16) -> MaskedLanguageModelTask:
    vocab = CharVocab.from_text(TEXT_TRAINED)
    spec = DataSpec(kind=TEXT, vocab=vocab.symbols, metadata={"seq_len": seq_len})
    torch.manual_seed(0)
    return MaskedLanguageModelTask(
        spec.to_dict(),
        NET,
        optimizer={"lr": 3e-3, "weight_decay": 0.0},
        scheduler={"warmup_steps": 1, "min_lr_ratio": 1.0},
    )


def test_mask_is_one_special_token_of_the_prompt_not_six_characters():
    task = _task()
    ids = task.encode_prompt(f"ab{MASK_TOKEN}d{MASK_TOKEN}{MASK_TOKEN}")
    assert ids.tolist() == [
        *task.vocab.encode("ab").tolist(),
        task.mask_id,
        *task.vocab.encode("d").tolist(),
        task.mask_id,
        task.mask_id,
    ]
    assert task.mask_id == len(task.vocab) and task.net.vocab_size == len(task.vocab) + 1
    literal = task.encode_prompt(f"[MASK{MASK_TOKEN}")
    assert literal.tolist()[-1] == task.mask_id and len(literal) == 6  # "[MASK" is 5 characters
    with pytest.raises(ConfigError, match="has no \\[MASK\\] to fill in"):
        task.encode_prompt("abc")
    with pytest.raises(ConfigError, match="more than the 16 the model was trained on"):
        task.encode_prompt("a" * 16 + MASK_TOKEN)


def test_evaluation_masks_each_batch_the_same_way_every_time():
    task = _task()
    tokens = task.vocab.encode(TEXT_TRAINED[:64]).view(4, 16)
    first = task.corrupt(tokens, torch.Generator().manual_seed(5))
    again = task.corrupt(tokens, torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    inputs, labels = first
    replaced = inputs[(labels != -100) & (inputs != task.mask_id) & (inputs != tokens)]
    assert ((replaced >= 1) & (replaced < len(task.vocab))).all()


def test_a_small_bert_learns_to_fill_in_blanks_of_a_repetitive_text():
    task = _task()
    stream = task.vocab.encode(TEXT_TRAINED)
    optimizer = torch.optim.Adam(task.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    task.train()
    for _ in range(300):
        starts = torch.randint(0, len(stream) - 16, (16,), generator=generator)
        windows = torch.stack([stream[s : s + 16] for s in starts.tolist()])
        loss, _ = task.masked_loss(*task.corrupt(windows, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    (prediction,) = task.predict_from(
        PredictionInputs(prompt=f"abc{MASK_TOKEN}efg{MASK_TOKEN} abcd"), {}
    )
    assert prediction.value == "abcdefgh abcd"
    assert prediction.lines[0] == "abcdefgh abcd"
    assert prediction.lines[1].startswith(f"  {MASK_TOKEN} 1: 'd' ")
    assert len(prediction.lines) == 3
