"""The character LM task's metrics and truncated BPTT, against brute-force computations."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from conftest import make_corpus
from torch.nn import functional as F
from torchmetrics.text import Perplexity

from glimpse.data.text.char_text import CharTextDataModule
from glimpse.tasks.char_lm import CharLanguageModelTask

NET = {
    "_target_": "glimpse.models.char_rnn.CharRNN",
    "cell": "lstm",
    "embedding_dim": 8,
    "hidden_size": 16,
    "num_layers": 1,
}
OPTIM = {"lr": 1e-3, "weight_decay": 0.0}
SCHEDULE = {"warmup_steps": 1, "min_lr_ratio": 0.1}


@pytest.fixture
def datamodule(tmp_path):
    data = CharTextDataModule(
        corpus="text", path=str(make_corpus(tmp_path / "c.txt")), seq_len=16, batch_size=4
    )
    data.setup("fit")
    return data


def _task(data: CharTextDataModule) -> CharLanguageModelTask:
    torch.manual_seed(0)
    return CharLanguageModelTask(data.spec.to_dict(), NET, OPTIM, SCHEDULE, samples=None)


def test_validation_metrics_equal_a_brute_force_pass_with_carried_state(datamodule):
    task = _task(datamodule)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(task, datamodule=datamodule)

    task.eval()
    logits, targets, state = [], [], None
    with torch.no_grad():
        for inputs, batch_targets in datamodule.val_dataloader():
            batch_logits, state = task.net(inputs, state)
            logits.append(batch_logits)
            targets.append(batch_targets)
    logits, targets = torch.cat(logits, 1), torch.cat(targets, 1)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item()
    reference_ppl = Perplexity()(logits, targets).item()

    assert metrics["val/loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["val/bpc"] == pytest.approx(loss / math.log(2), rel=1e-5)
    assert metrics["val/ppl"] == pytest.approx(reference_ppl, rel=1e-4)


def test_training_carries_detached_state_and_resets_it_at_batch_zero(datamodule):
    task = _task(datamodule)
    batches = iter(datamodule.train_dataloader())
    first, second = next(batches), next(batches)
    task._step(first, 0, "train")
    carried = task._state["train"]
    assert all(s.grad_fn is None for s in carried)

    expected_logits, _ = task.net(second[0], carried)
    expected = F.cross_entropy(
        expected_logits.reshape(-1, expected_logits.shape[-1]), second[1].reshape(-1)
    )
    assert task._step(second, 1, "train")[0].item() == pytest.approx(expected.item(), rel=1e-6)

    fresh_logits, _ = task.net(second[0], None)
    fresh = F.cross_entropy(fresh_logits.reshape(-1, fresh_logits.shape[-1]), second[1].reshape(-1))
    assert task._step(second, 0, "train")[0].item() == pytest.approx(fresh.item(), rel=1e-6)


def test_non_finite_loss_raises_naming_the_step(datamodule):
    task = _task(datamodule)
    with pytest.raises(FloatingPointError, match="global step 0"):
        task.check_finite(torch.tensor(float("inf")))
