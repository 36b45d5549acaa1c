"""Translation with an encoder-decoder (Sutskever 2014, Bahdanau 2015, Vaswani 2017) as a task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.text import BLEUScore, CHRFScore

from glimpse.batches import SENTENCE_PAIRS, SentencePairs
from glimpse.callbacks.translation_figures import TranslationFigures, alignment_figure
from glimpse.data.text.sequence_tokenizers import tokenizer_from_dict
from glimpse.data.text.word_tokenizer import tokenize
from glimpse.errors import ConfigError
from glimpse.models.decoding import Decoded, beam_search, greedy_decode
from glimpse.prediction import Prediction, PredictionInputs, PredictionOptions
from glimpse.tasks.base import GlimpseTask, plain

#: Tokens decoded beyond the longest training target, at least.
DECODE_MARGIN = 5


@dataclass
class Translation:
    """One translated sentence.

    Attributes:
        text: the translation as text.
        source_tokens: the source's tokens as the model read them (``<end>`` included; unknown
            ones as ``<unk>``).
        target_tokens: the generated tokens (``<end>`` included when it was generated).
        attention: ``(len(target_tokens), len(source_tokens))`` the weights over the source
            when each target token was chosen (attention models), else None.
        score: the search's (length-normalised) log-probability.
    """

    text: str
    source_tokens: list[str]
    target_tokens: list[str]
    attention: Tensor | None
    score: float


def scored_words(text: str) -> str:
    """What BLEU and chrF compare: the lower-cased words, punctuation dropped, joined by spaces
    (:func:`glimpse.data.text.word_tokenizer.tokenize`), whatever the model's tokens were."""
    return " ".join(tokenize(text))


def _check_beam_size(beam_size: int) -> None:
    if int(beam_size) < 1:
        raise ConfigError(
            f"The beam size must be at least 1 (1 decodes greedily), not {beam_size}."
        )


def bucket_names(edges: list[int]) -> list[str]:
    """Names of the source-length buckets cut at ``edges`` (upper bounds in words): ``[2, 3]``
    gives ``1-2``, ``3``, ``4+``."""
    names, low = [], 1
    for edge in edges:
        names.append(f"{low}-{edge}" if edge > low else f"{edge}")
        low = edge + 1
    return [*names, f"{low}+"]


class TranslationTask(GlimpseTask):
    """Translate source sentences with any encoder-decoder of the step protocol
    (:class:`~glimpse.models.seq2seq.Seq2Seq`, :class:`~glimpse.models.seq2seq.AttentionSeq2Seq`,
    :class:`~glimpse.models.transformer_seq2seq.TransformerSeq2Seq`).

    Training is teacher forcing: the decoder reads ``<start> y_1 .. y_m`` and is scored on
    ``y_1 .. y_m <end>`` by cross-entropy over the non-pad tokens (with ``label_smoothing``,
    Szegedy et al. 2016, 0.1 in Vaswani et al.). Validation and test also log the teacher-forced
    loss over every reference, and decode each source freely (beam search) to score it against
    all its references: corpus BLEU-4 (Papineni et al. 2002) and chrF (Popović 2015), both from
    torchmetrics, on :func:`scored_words`. The test split also logs BLEU per bucket of source
    length in words (``length_buckets``), the lecture's question of how the single-vector
    bottleneck fares on longer sentences.

    Args:
        spec: the DataSpec as a dict (its ``tokenizer`` holds both vocabularies).
        net: Hydra config of the model; ``source_vocab_size`` and ``target_vocab_size`` are
            filled in.
        optimizer, scheduler: see :class:`~glimpse.tasks.base.GlimpseTask`.
        label_smoothing: ε of the cross-entropy.
        decoding: ``beam_size`` (1: greedy), ``length_penalty`` (see
            :func:`~glimpse.models.decoding.beam_search`) and ``max_length`` (the most tokens
            decoded, ``<end>`` included; None: the longest training target plus half, at
            least :data:`DECODE_MARGIN` more).
        length_buckets: upper bounds, in source words, of the test split's BLEU buckets.
        figures: arguments of :class:`~glimpse.callbacks.translation_figures.
            TranslationFigures`; None for none.
    """

    ACCEPTS = frozenset({SENTENCE_PAIRS})
    PREDICTS_FROM = frozenset({"text"})

    def __init__(
        self,
        spec: dict[str, Any],
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        label_smoothing: float = 0.0,
        decoding: dict[str, Any] | None = None,
        length_buckets: list[int] | None = None,
        figures: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        decoding = {"beam_size": 4, "length_penalty": 0.0, "max_length": None, **(decoding or {})}
        buckets = sorted(int(edge) for edge in (length_buckets or []))
        self.save_hyperparameters(
            {
                "spec": plain(spec),
                "net": plain(net),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler),
                "label_smoothing": float(label_smoothing),
                "decoding": plain(decoding),
                "length_buckets": buckets,
                "figures": plain(figures),
            }
        )
        tokenizers = self.spec.tokenizer or {}
        if set(tokenizers) != {"source", "target"}:
            raise ConfigError(
                "A translation model needs a spec with source and target vocabularies "
                "(data=text_pairs)."
            )
        _check_beam_size(decoding["beam_size"])
        self.source_tokenizer = tokenizer_from_dict(tokenizers["source"])
        self.target_tokenizer = tokenizer_from_dict(tokenizers["target"])
        self.net = instantiate(
            self.hparams["net"],
            source_vocab_size=len(self.source_tokenizer),
            target_vocab_size=len(self.target_tokenizer),
        )
        self.buckets = bucket_names(buckets)
        for split in ("val", "test"):
            metrics = {"bleu": BLEUScore(n_gram=4), "chrf": CHRFScore()}
            setattr(self, f"{split}_metrics", MetricCollection(metrics, prefix=f"{split}/"))
        self.test_bucket_bleu = nn.ModuleDict({name: BLEUScore(n_gram=4) for name in self.buckets})

    def configure_callbacks(self) -> list[Callback]:
        figures = self.hparams["figures"]
        if figures is None or any(
            isinstance(c, TranslationFigures) for c in self.trainer.callbacks
        ):
            return []
        return [TranslationFigures(self.trainer.default_root_dir, **figures)]

    # Training --------------------------------------------------------------------------------

    def teacher_forced_loss(self, batch: SentencePairs) -> Tensor:
        """Mean cross-entropy of every target of the batch given its source."""
        owner = batch.target_source
        inputs, targets = batch.targets[:, :-1], batch.targets[:, 1:]
        output = self.net(batch.sources[owner], batch.source_lengths[owner], inputs)
        return F.cross_entropy(
            output.logits.float().flatten(0, 1),
            targets.flatten(),
            ignore_index=self.target_tokenizer.pad_id,
            label_smoothing=self.hparams["label_smoothing"],
        )

    def training_step(self, batch: SentencePairs, batch_idx: int) -> Tensor:
        loss = self.teacher_forced_loss(batch)
        self.check_finite(loss)
        size = batch.targets.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        return loss

    # Decoding --------------------------------------------------------------------------------

    def max_length(self) -> int:
        settings = self.hparams["decoding"]
        if settings["max_length"] is not None:
            return int(settings["max_length"])
        longest = int(self.spec.metadata.get("max_target_tokens", 20))
        return longest + max(DECODE_MARGIN, longest // 2) + 1

    def decode(self, sources: Tensor, lengths: Tensor, beam_size: int | None = None) -> Decoded:
        """Translations of padded sources ``(B, S)``: greedy for beam size 1, else beam search."""
        settings = self.hparams["decoding"]
        beam = int(beam_size or settings["beam_size"])
        start, end = self.target_tokenizer.start_id, self.target_tokenizer.end_id
        if beam == 1:
            return greedy_decode(self.net, (sources, lengths), start, end, self.max_length())
        penalty = float(settings["length_penalty"])
        return beam_search(
            self.net, (sources, lengths), start, end, self.max_length(), beam, penalty
        )

    def set_decoding(
        self, beam_size: int | None = None, length_penalty: float | None = None
    ) -> None:
        """Decode with another beam size or length penalty from now on (None keeps one)."""
        if beam_size is not None:
            _check_beam_size(beam_size)
            self.hparams["decoding"]["beam_size"] = int(beam_size)
        if length_penalty is not None:
            self.hparams["decoding"]["length_penalty"] = float(length_penalty)

    def _texts(self, decoded: Decoded) -> list[str]:
        return [self.target_tokenizer.decode(row) for row in decoded.tokens.tolist()]

    # Evaluation ------------------------------------------------------------------------------

    def _bucket(self, text: str) -> str:
        words = len(text.split())
        for name, edge in zip(self.buckets, self.hparams["length_buckets"], strict=False):
            if words <= edge:
                return name
        return self.buckets[-1]

    def _evaluate(self, batch: SentencePairs, split: str) -> None:
        loss = self.teacher_forced_loss(batch)
        size = len(batch.texts)
        self.log(f"{split}/loss", loss, batch_size=size, sync_dist=True, prog_bar=True)
        hypotheses = [
            scored_words(t) for t in self._texts(self.decode(batch.sources, batch.source_lengths))
        ]
        references = [[scored_words(r) for r in refs] for refs in batch.references]
        getattr(self, f"{split}_metrics").update(hypotheses, references)
        if split == "test":
            for text, hypothesis, refs in zip(batch.texts, hypotheses, references, strict=True):
                self.test_bucket_bleu[self._bucket(text)].update([hypothesis], [refs])

    def validation_step(self, batch: SentencePairs, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch: SentencePairs, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
        for name, metric in self.test_bucket_bleu.items():
            if metric.update_called:
                self.log(f"test/bleu_src_words_{name}", metric.compute())
            metric.reset()

    # Inference -------------------------------------------------------------------------------

    def translate(self, texts: list[str], beam_size: int | None = None) -> list[Translation]:
        """Translate ``texts`` with the configured decoding, in eval mode without gradients."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self._translate(texts, beam_size)
        finally:
            self.train(was_training)

    def _translate(self, texts: list[str], beam_size: int | None) -> list[Translation]:
        source_tok, target_tok = self.source_tokenizer, self.target_tokenizer
        encoded = [[*source_tok.encode(t, add_special=False), source_tok.end_id] for t in texts]
        lengths = torch.tensor([len(ids) for ids in encoded], device=self.device)
        sources = torch.zeros(len(texts), int(lengths.max()), dtype=torch.long, device=self.device)
        for row, ids in enumerate(encoded):
            sources[row, : len(ids)] = torch.tensor(ids)
        decoded = self.decode(sources, lengths, beam_size)
        results = []
        for row, ids in enumerate(encoded):
            generated = decoded.tokens[row, : int(decoded.lengths[row])].tolist()
            attention = None
            if decoded.attention is not None:
                attention = decoded.attention[row, : len(generated), : len(ids)].float().cpu()
            results.append(
                Translation(
                    text=target_tok.decode(generated),
                    source_tokens=[source_tok.words[i] for i in ids],
                    target_tokens=[target_tok.words[i] for i in generated],
                    attention=attention,
                    score=float(decoded.scores[row]),
                )
            )
        return results

    def predict_inputs(
        self, inputs: PredictionInputs, options: PredictionOptions
    ) -> list[Prediction]:
        """Translate each ``text=`` and draw its attention over the source (attention models)."""
        beam_size = options.get("beam_size")
        if beam_size is not None:
            _check_beam_size(beam_size)
        known = set(self.source_tokenizer.words)
        predictions = []
        for text, translation in zip(
            inputs.texts, self.translate(list(inputs.texts), beam_size), strict=True
        ):
            lines = [f"{text} -> {translation.text}"]
            unknown = [
                token for token in self.source_tokenizer.tokenize(text) if token not in known
            ]
            if unknown:
                lines.append(
                    f"  not in the training vocabulary (read as <unk>): {' '.join(unknown)}"
                )
            figures = {}
            if translation.attention is not None:
                figures["attention"] = alignment_figure(
                    translation.source_tokens, translation.target_tokens, translation.attention
                )
            predictions.append(Prediction(text, lines, figures, translation.text))
        return predictions


__all__ = ["Translation", "TranslationTask", "bucket_names", "scored_words"]
