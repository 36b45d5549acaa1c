"""Masked language modelling (BERT, Devlin et al. 2019) on character text as a task."""

from __future__ import annotations

import re
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from glimpse.batches import TEXT
from glimpse.data.text.vocab import CharVocab
from glimpse.errors import ConfigError
from glimpse.models.bert import IGNORE, mask_tokens
from glimpse.prediction import Prediction, PredictionInputs, PredictionOptions
from glimpse.tasks.base import GlimpseTask, plain

#: How a prompt writes a blank: the special token, never read as its five characters.
MASK_TOKEN = "[MASK]"
#: Candidates listed for each blank of a prompt.
CANDIDATES_SHOWN = 5


class MaskedLanguageModelTask(GlimpseTask):
    """Fill in masked characters of the text data (``data=shakespeare|text|pystdlib``).

    The vocabulary is the data's characters (from the spec) plus ``[MASK]``, the last id. Each
    training window is corrupted anew at every step by :func:`~glimpse.models.bert.mask_tokens`
    (dynamic masking, as RoBERTa; BERT masked each sequence ten fixed ways), random
    replacements drawn from the known characters. The loss is the cross-entropy at the selected
    positions only; validation and test corrupt each batch the same way every time (a generator
    seeded by ``eval_seed`` and the batch index) and log that loss and the masked-token
    accuracy, the share of selected positions whose original character is the most probable.

    ``eval.py ckpt_path=... prompt="To be or not to [MASK][MASK]"`` fills each ``[MASK]`` of the
    prompt with the most probable character (all blanks at once, from the whole prompt).

    Args:
        spec: the DataSpec as a dict (the characters, and ``seq_len``, the longest input).
        net: Hydra config of :class:`~glimpse.models.bert.Bert`; ``vocab_size`` and
            ``max_len`` are filled in.
        optimizer, scheduler: see :class:`~glimpse.tasks.base.GlimpseTask`.
        masking: ``select_prob`` (0.15), ``mask_prob`` (0.8) and ``random_prob`` (0.1).
        eval_seed: the seed of validation and test corruption.
    """

    ACCEPTS = frozenset({TEXT})
    PREDICTS_FROM = frozenset({"prompt"})

    def __init__(
        self,
        spec: dict[str, Any],
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        masking: dict[str, float] | None = None,
        eval_seed: int = 0,
    ) -> None:
        super().__init__()
        masking = {"select_prob": 0.15, "mask_prob": 0.8, "random_prob": 0.1, **(masking or {})}
        self.save_hyperparameters(
            {
                "spec": plain(spec),
                "net": plain(net),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler),
                "masking": plain(masking),
                "eval_seed": int(eval_seed),
            }
        )
        self.vocab = CharVocab(self.spec.vocab)
        self.mask_id = len(self.vocab)
        self.net = instantiate(
            self.hparams["net"],
            vocab_size=len(self.vocab) + 1,
            max_len=int(self.spec.metadata["seq_len"]),
        )
        mask_tokens(torch.zeros(1, 1, dtype=torch.long), self.mask_id, (1, 2), **masking)
        self.accuracy = torch.nn.ModuleDict(
            {
                split: MulticlassAccuracy(len(self.vocab) + 1, average="micro", ignore_index=IGNORE)
                for split in ("val", "test")
            }
        )

    def corrupt(self, tokens: Tensor, generator: torch.Generator | None = None):
        """``(inputs, labels)`` of BERT's masking of ``tokens (B, T)``; random replacements are
        the known characters (ids ``1 .. len(vocab) - 1``)."""
        return mask_tokens(
            tokens,
            self.mask_id,
            (1, len(self.vocab)),
            generator=generator,
            **self.hparams["masking"],
        )

    def masked_loss(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy at the selected positions (float32), and the logits ``(B, T, V)``."""
        logits = self.net(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        return loss, logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self.masked_loss(*self.corrupt(batch[0]))
        self.check_finite(loss)
        size = batch[0].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], batch_idx: int, split: str) -> None:
        generator = torch.Generator().manual_seed(self.hparams["eval_seed"] * 1_000_003 + batch_idx)
        inputs, labels = self.corrupt(batch[0], generator)
        loss, logits = self.masked_loss(inputs, labels)
        size = batch[0].shape[0]
        self.log(f"{split}/loss", loss, batch_size=size, sync_dist=True, prog_bar=True)
        accuracy = self.accuracy[split]
        accuracy.update(logits.flatten(0, 1), labels.flatten())
        self.log(f"{split}/masked_acc", accuracy, on_epoch=True, prog_bar=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    # Filling in a prompt ---------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> Tensor:
        """The ids of ``prompt``: each :data:`MASK_TOKEN` is the mask id, every other character
        its own (unknown ones U+FFFD). ``(T,)`` int64."""
        ids: list[int] = []
        for piece in re.split(f"({re.escape(MASK_TOKEN)})", prompt):
            if piece == MASK_TOKEN:
                ids.append(self.mask_id)
            elif piece:
                ids += self.vocab.encode(piece).tolist()
        if self.mask_id not in ids:
            raise ConfigError(
                f"The prompt {prompt!r} has no {MASK_TOKEN} to fill in; write one per missing "
                f'character, e.g. prompt="To be or not to {MASK_TOKEN}{MASK_TOKEN}".'
            )
        if len(ids) > self.net.max_len:
            raise ConfigError(
                f"The prompt holds {len(ids)} characters, more than the {self.net.max_len} the "
                "model was trained on (data.seq_len); shorten it."
            )
        return torch.tensor(ids)

    def fill(self, prompt: str, candidates: int = CANDIDATES_SHOWN) -> tuple[str, list]:
        """The prompt with every blank filled by its most probable character, and per blank its
        ``candidates`` most probable characters with their probabilities (``[MASK]`` and the
        unknown symbol are never proposed)."""
        tokens = self.encode_prompt(prompt).to(self.device)
        probabilities = self.net(tokens[None])[0].float().softmax(dim=-1)
        probabilities[:, [0, self.mask_id]] = 0.0
        blanks = (tokens == self.mask_id).nonzero().flatten()
        filled = tokens.clone()
        ranked = []
        for position in blanks.tolist():
            values, ids = probabilities[position].topk(candidates)
            filled[position] = ids[0]
            ranked.append(
                [
                    (self.vocab.symbols[i], float(p))
                    for i, p in zip(ids.tolist(), values.tolist(), strict=True)
                ]
            )
        return self.vocab.decode(filled), ranked

    def predict_inputs(
        self, inputs: PredictionInputs, options: PredictionOptions
    ) -> list[Prediction]:
        """Fill in the ``[MASK]`` blanks of ``prompt=``."""
        filled, ranked = self.fill(inputs.prompt)
        lines = [filled]
        for index, candidates in enumerate(ranked, start=1):
            shown = ", ".join(f"{symbol!r} {p:.1%}" for symbol, p in candidates)
            lines.append(f"  {MASK_TOKEN} {index}: {shown}")
        return [Prediction(inputs.prompt, lines, {}, filled)]


__all__ = ["MASK_TOKEN", "MaskedLanguageModelTask"]
