"""The translation task: it learns a small mapping, scores against every reference, buckets BLEU
by source length, and translates text from its hyperparameters alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchmetrics.text import BLEUScore

from glimpse.batches import SentencePairs
from glimpse.data.text.pairs import SentencePairDataModule, collate_pairs
from glimpse.prediction import PredictionInputs
from glimpse.tasks.translation import TranslationTask, bucket_names, scored_words

NETS = {
    "seq2seq_rnn": {
        "_target_": "glimpse.models.seq2seq.Seq2Seq",
        "embed_dim": 16,
        "hidden_size": 32,
        "num_layers": 1,
        "dropout": 0.0,
    },
    "seq2seq_attention": {
        "_target_": "glimpse.models.seq2seq.AttentionSeq2Seq",
        "embed_dim": 16,
        "hidden_size": 32,
        "attention_dim": 16,
        "readout_dim": 16,
        "dropout": 0.0,
    },
    "transformer_seq2seq": {
        "_target_": "glimpse.models.transformer_seq2seq.TransformerSeq2Seq",
        "dim": 32,
        "num_heads": 2,
        "num_encoder_layers": 1,
        "num_decoder_layers": 1,
        "ffn_dim": 64,
        "dropout": 0.0,
    },
}
WORDS = ["one", "two", "three", "four", "five", "six"]
FRENCH = ["un", "deux", "trois", "quatre", "cinq", "six"]


def _pairs_file(tmp_path: Path) -> Path:
    """Two-word phrases and their word-by-word translations: a mapping small models learn."""
    lines = [
        f"{a} {b}\t{FRENCH[i]} {FRENCH[j]}"
        for i, a in enumerate(WORDS)
        for j, b in enumerate(WORDS)
    ]
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _task(module: SentencePairDataModule, model: str, **kwargs) -> TranslationTask:
    torch.manual_seed(0)
    return TranslationTask(
        spec=module.spec.to_dict(),
        net=NETS[model],
        optimizer={"lr": 1e-2, "weight_decay": 0.0},
        scheduler={"warmup_steps": 1, "min_lr_ratio": 1.0},
        decoding={"beam_size": 2},
        length_buckets=[1, 2],
        figures=None,
        **kwargs,
    )


def _fit(task: TranslationTask, module: SentencePairDataModule, steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(task.parameters(), lr=lr)
    batches = list(module.train_dataloader())
    task.train()
    for step in range(steps):
        loss = task.teacher_forced_loss(batches[step % len(batches)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.fixture
def module(tmp_path) -> SentencePairDataModule:
    datamodule = SentencePairDataModule(
        str(_pairs_file(tmp_path)), val_fraction=0.1, test_fraction=0.1, batch_size=8
    )
    datamodule.setup("fit")
    return datamodule


@pytest.mark.parametrize("model", list(NETS))
def test_each_model_learns_to_translate_its_training_pairs(module, model):
    """After 150 steps on 28 word-for-word pairs every training source is translated exactly,
    greedily and with beam search."""
    task = _task(module, model)
    _fit(task, module, 150, lr=1e-3 if model == "transformer_seq2seq" else 1e-2)
    train = module.datasets["train"].groups
    texts = [group.text for group in train]
    for beam in (1, 2):
        translations = task.translate(texts, beam_size=beam)
        correct = [t.text == g.references[0] for t, g in zip(translations, train, strict=True)]
        assert sum(correct) == len(train), [t.text for t in translations]


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_bleu_and_chrf_use_every_reference_of_a_source(module, monkeypatch):
    """The logged BLEU is torchmetrics' corpus BLEU of the decoded text against all of each
    source's references, on lower-cased words without punctuation."""
    task = _task(module, "seq2seq_rnn")
    groups = module.datasets["val"].groups[:2]
    batch = collate_pairs(groups)
    hypotheses = ["Quatre, DEUX !", "cinq un"]
    monkeypatch.setattr(task, "_texts", lambda decoded: hypotheses)
    task._evaluate(batch, "val")
    got = task.val_metrics.compute()["val/bleu"]
    expected = BLEUScore(n_gram=4)(
        ["quatre deux", "cinq un"], [[scored_words(r) for r in g.references] for g in groups]
    )
    assert float(got) == pytest.approx(float(expected))
    assert scored_words("Je suis là !") == "je suis là"


def test_test_bleu_is_bucketed_by_source_length_in_words():
    assert bucket_names([2, 3]) == ["1-2", "3", "4+"]
    assert bucket_names([1, 2]) == ["1", "2", "3+"]


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_bucket_metrics_split_the_test_sources(module, monkeypatch):
    task = _task(module, "seq2seq_rnn")
    assert task.buckets == ["1", "2", "3+"]
    assert task._bucket("one") == "1" and task._bucket("one two") == "2"
    assert task._bucket("a b c d") == "3+"
    batch = collate_pairs(module.datasets["test"].groups)
    monkeypatch.setattr(task, "_texts", lambda decoded: ["un"] * len(batch.texts))
    task._evaluate(batch, "test")
    assert task.test_bucket_bleu["2"].update_called and not task.test_bucket_bleu["1"].update_called


@pytest.mark.parametrize("model", ["seq2seq_rnn", "seq2seq_attention"])
def test_prediction_translates_texts_and_draws_attention_for_attention_models(module, model):
    task = _task(module, model)
    rebuilt = TranslationTask(**task.hparams)
    rebuilt.load_state_dict(task.state_dict())
    predictions = rebuilt.predict_from(PredictionInputs(texts=("one two", "one seven")), {})
    assert [p.source for p in predictions] == ["one two", "one seven"]
    assert predictions[0].lines[0].startswith("one two -> ")
    assert predictions[1].lines[1] == "  not in the training vocabulary (read as <unk>): seven"
    assert isinstance(predictions[0].value, str)
    if model == "seq2seq_attention":
        figure = predictions[0].figures["attention"]
        labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
        assert labels == ["one", "two", "<end>"]
    else:
        assert predictions[0].figures == {}


def test_a_spec_without_two_vocabularies_is_refused(module):
    spec = module.spec.to_dict()
    spec["tokenizer"] = None
    with pytest.raises(ValueError, match="needs a spec with source and target vocabularies"):
        TranslationTask(spec, NETS["seq2seq_rnn"], {"lr": 1e-3, "weight_decay": 0.0}, {})


def test_training_step_logs_a_finite_loss_on_a_batch(module):
    task = _task(module, "transformer_seq2seq", label_smoothing=0.1)
    batch = next(iter(module.train_dataloader()))
    assert isinstance(batch, SentencePairs)
    loss = task.teacher_forced_loss(batch)
    assert torch.isfinite(loss) and loss.item() > 0
