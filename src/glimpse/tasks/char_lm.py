"""Character-level language modelling (lecture 9's char-rnn example) as a LightningModule."""

from __future__ import annotations

import math
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.text import Perplexity

from glimpse.batches import TEXT
from glimpse.callbacks.text_samples import TextSampleCallback
from glimpse.data.text.vocab import CharVocab
from glimpse.models.char_rnn import detach_state
from glimpse.models.sampling import sample_tokens
from glimpse.prediction import Prediction, PredictionInputs, PredictionOptions
from glimpse.tasks.base import GlimpseTask, plain


class CharLanguageModelTask(GlimpseTask):
    """Next-character prediction with cross-entropy.

    Logs ``train/loss`` and, for val and test, ``loss`` (nats per character), ``bpc`` (bits
    per character, ``loss / ln 2``) and ``ppl`` (perplexity, ``exp`` of the mean loss).

    With ``batching="stream"`` data (see :class:`~glimpse.data.text.streams.StreamBatches`) the
    recurrent state is carried from batch to batch and detached in between (truncated BPTT);
    it is reset at the start of every epoch and of every validation or test pass, and saved in
    checkpoints, so a run resumed mid-epoch continues exactly where it stopped.

    Args:
        spec: the DataSpec as a dict (holds the vocabulary).
        net: a Hydra config of the network, e.g. ``{"_target_": "glimpse.models.char_rnn.
            CharRNN", "cell": "lstm"}``; ``vocab_size`` is filled in from the spec.
        optimizer: AdamW arguments (lr, weight_decay, betas).
        scheduler: warmup_steps and min_lr_ratio of the cosine schedule.
        samples: arguments of the :class:`~glimpse.callbacks.text_samples.TextSampleCallback`
            that samples text after every validation (prompt, num_chars, temperature, top_k),
            or None for no samples.
    """

    ACCEPTS = frozenset({TEXT})
    PREDICTS_FROM = frozenset({"prompt"})
    PREDICTS_AFTER_TEST = True

    def __init__(
        self,
        spec: dict[str, Any],
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        samples: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "spec": plain(spec),
                "net": plain(net),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler),
                "samples": plain(samples),
            }
        )
        self.vocab = CharVocab(self.spec.vocab)
        self.net = instantiate(self.hparams["net"], vocab_size=len(self.vocab))
        self.carries_state = self.spec.metadata.get("batching") == "stream"
        self._state: dict[str, Any] = {}
        self.perplexity = nn.ModuleDict({"val": Perplexity(), "test": Perplexity()})

    def configure_callbacks(self) -> list[TextSampleCallback]:
        samples = self.hparams.get("samples")
        if not samples or any(isinstance(c, TextSampleCallback) for c in self.trainer.callbacks):
            return []
        return [TextSampleCallback(output_dir=self.trainer.default_root_dir, **samples)]

    def forward(self, idx: Tensor, state: Any = None):
        """``idx (B, T) -> (logits (B, T, V), state)``."""
        return self.net(idx, state)

    def _step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, split: str
    ) -> tuple[Tensor, Tensor]:
        """Loss and logits ``(B, T, V)`` of one batch, carrying the split's recurrent state."""
        inputs, targets = batch
        if batch_idx == 0:
            self._state.pop(split, None)
        state = self._state.get(split) if self.carries_state else None
        logits, state = self.net(inputs, state)
        if self.carries_state:
            self._state[split] = detach_state(state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        return loss, logits

    def _evaluate(self, batch: tuple[Tensor, Tensor], batch_idx: int, split: str) -> None:
        """Log loss and bits per character (batch means; every batch has the same size) and
        the split's perplexity, ``exp`` of the mean loss over the whole pass (torchmetrics)."""
        loss, logits = self._step(batch, batch_idx, split)
        kwargs = dict(on_epoch=True, batch_size=batch[0].shape[0], sync_dist=True)
        self.log(f"{split}/loss", loss, prog_bar=True, **kwargs)
        self.log(f"{split}/bpc", loss / math.log(2), **kwargs)
        perplexity = self.perplexity[split]
        perplexity.update(logits.float(), batch[1])
        self.log(f"{split}/ppl", perplexity, on_epoch=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = self._state.get("train")
        checkpoint["glimpse"]["carried_state"] = list(state) if isinstance(state, tuple) else state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("glimpse", {}).get("carried_state")
        if state is not None:
            self._state["train"] = tuple(state) if isinstance(state, list) else state

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._step(batch, batch_idx, "train")
        self.check_finite(loss)
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch[0].shape[0],
        )
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def generate(
        self,
        prompt: str,
        num_chars: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> str:
        """Sample ``num_chars`` characters after ``prompt`` (which is not repeated)."""
        if not prompt:
            raise ValueError("The prompt must hold at least one character.")
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        was_training = self.training
        self.eval()
        try:
            ids = sample_tokens(
                self.net,
                self.vocab.encode(prompt).to(self.device)[None],
                num_chars,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
            )
        finally:
            self.train(was_training)
        return self.vocab.decode(ids[0])

    def predict_inputs(
        self, inputs: PredictionInputs, options: PredictionOptions
    ) -> list[Prediction]:
        """``num_chars`` characters sampled after ``prompt`` (a newline when none is given) at
        ``temperature`` and ``top_k``, seeded with ``seed``: the prompt and its continuation."""
        num_chars = int(options.get("num_chars", 0))
        if num_chars <= 0:
            return []
        prompt = inputs.prompt or "\n"
        text = self.generate(
            prompt,
            num_chars,
            options.get("temperature", 1.0),
            options.get("top_k"),
            seed=options.get("seed"),
        )
        return [Prediction(prompt, [prompt + text], value=prompt + text)]
