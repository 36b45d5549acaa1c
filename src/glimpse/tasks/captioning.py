"""Image captioning (lecture 9's CNN + RNN captioner and Show, Attend and Tell) as a task."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.text import BLEUScore

from glimpse.batches import CAPTIONED_IMAGES, CaptionedImages
from glimpse.callbacks.caption_figures import CaptionFigures
from glimpse.data.text.word_tokenizer import WordTokenizer
from glimpse.metrics.cider import CIDErD
from glimpse.models.captioning import doubly_stochastic_penalty
from glimpse.models.decoding import Decoded, beam_search, greedy_decode
from glimpse.models.pretrained import torchvision_state_dict
from glimpse.optim.param_groups import decay_groups
from glimpse.optim.settings import OptimizerSettings
from glimpse.plotting.captions import attention_figure
from glimpse.prediction import (
    Prediction,
    PredictionInputs,
    PredictionOptions,
    stacked_pixels,
)
from glimpse.tasks.base import GlimpseTask, plain

log = logging.getLogger(__name__)

#: Words decoded beyond the longest training caption before a caption is cut off.
DECODE_MARGIN = 5


@dataclass
class GeneratedCaption:
    """One decoded caption.

    Attributes:
        words: the caption's words, without ``<start>`` and ``<end>``.
        attention: for attention decoders, ``(L, h, w)``: the attention over the encoder's grid
            when each word was chosen; None otherwise.
        score: the beam search's (length-normalised) log-probability of the caption.
    """

    words: list[str]
    attention: Tensor | None
    score: float


def caption_cross_entropy(logits: Tensor, targets: Tensor, pad_id: int) -> Tensor:
    """Cross-entropy of logits ``(R, T, V)`` against word ids ``(R, T)``, averaged over the
    tokens that are not ``pad_id`` (computed in float32)."""
    return F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=pad_id, reduction="mean"
    )


def _check_beam_size(beam_size: int) -> None:
    if int(beam_size) < 1:
        raise ValueError(f"The beam size must be at least 1 (1 decodes greedily), not {beam_size}.")


class Captioner(GlimpseTask):
    """Caption images with a CNN encoder and a recurrent decoder from config.

    Training uses teacher forcing: the decoder reads ``<start> w_1 .. w_n`` and is scored on
    predicting ``w_1 .. w_n <end>``. The loss is the cross-entropy over the non-pad tokens plus,
    for attention decoders, the doubly stochastic regulariser of Xu et al. (2015, eq. 14),
    ``λ Σ_i (1 - Σ_t a_{t,i})²`` per caption (summed over the grid positions ``i`` and the
    caption's words ``t``), averaged over the captions.

    Validation and test decode freely (beam search, no teacher forcing) and score the captions
    against every reference of their image: corpus BLEU-1 to BLEU-4 (torchmetrics) and CIDEr-D
    (:mod:`glimpse.metrics.cider`); they also log the teacher-forced loss over all references.

    The encoder is frozen (weights fixed, BatchNorm in eval mode) until the epoch
    ``fine_tune_encoder_from_epoch`` (never when None), then trained at ``encoder_lr``.

    Args:
        spec: the DataSpec as a dict (its ``vocab`` is the tokenizer's words).
        encoder: Hydra config of :class:`~glimpse.models.captioning.CaptionEncoder`.
        decoder: Hydra config of a decoder (``ShowTell``, ``ShowAttendTell``);
            ``vocab_size`` and ``feature_dim`` are filled in.
        optimizer: AdamW arguments of the decoder (lr, weight_decay, betas).
        scheduler: warmup_steps and min_lr_ratio of the cosine schedule (both groups).
        encoder_lr: the encoder's learning rate once it is fine-tuned.
        fine_tune_encoder_from_epoch: the first epoch that trains the encoder; None keeps it
            frozen (and lets the datamodule cache its features).
        attention_regularization: λ of the doubly stochastic regulariser.
        decoding: ``beam_size``, ``length_penalty`` (see
            :func:`~glimpse.models.decoding.beam_search`) and ``max_length`` (the most
            tokens decoded, ``<end>`` included;
            None: the longest training caption plus a margin) of validation, test and
            :meth:`caption`.
        figures: arguments of :class:`~glimpse.callbacks.caption_figures.CaptionFigures`;
            None for none.
        pretrained: ``"torchvision"`` loads torchvision's ImageNet weights into the encoder when
            fitting starts (downloaded by torchvision); None starts from random weights.
    """

    ACCEPTS = frozenset({CAPTIONED_IMAGES})
    PREDICTS_FROM = frozenset({"image"})
    NETWORKS = ("encoder", "decoder")

    def __init__(
        self,
        spec: dict[str, Any],
        encoder: dict[str, Any],
        decoder: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        encoder_lr: float = 1e-4,
        fine_tune_encoder_from_epoch: int | None = None,
        attention_regularization: float = 0.005,
        decoding: dict[str, Any] | None = None,
        figures: dict[str, Any] | None = None,
        pretrained: str | None = "torchvision",
    ) -> None:
        super().__init__()
        decoding = {"beam_size": 3, "length_penalty": 0.0, "max_length": None, **(decoding or {})}
        self.save_hyperparameters(
            {
                "spec": plain(spec),
                "encoder": plain(encoder),
                "decoder": plain(decoder),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler),
                "encoder_lr": float(encoder_lr),
                "fine_tune_encoder_from_epoch": fine_tune_encoder_from_epoch,
                "attention_regularization": float(attention_regularization),
                "decoding": plain(decoding),
                "figures": plain(figures),
                "pretrained": pretrained,
            }
        )
        if not self.spec.vocab:
            raise ValueError("A captioner needs a spec with the captions' vocabulary.")
        if pretrained not in (None, "torchvision"):
            raise ValueError(
                f"model.pretrained={pretrained!r} is not known; use torchvision or null."
            )
        if fine_tune_encoder_from_epoch is not None and fine_tune_encoder_from_epoch < 0:
            raise ValueError(
                f"model.fine_tune_encoder_from_epoch={fine_tune_encoder_from_epoch} must be >= 0, "
                "or null to keep the encoder frozen."
            )
        _check_beam_size(decoding["beam_size"])
        self.tokenizer = WordTokenizer(self.spec.vocab)
        self.encoder = instantiate(self.hparams["encoder"])
        self.decoder = instantiate(
            self.hparams["decoder"],
            vocab_size=len(self.tokenizer),
            feature_dim=self.encoder.out_dim,
        )
        self.encoder_trainable = False
        self._set_encoder_trainable(fine_tune_encoder_from_epoch == 0)
        for split in ("val", "test"):
            metrics = {f"bleu{n}": BLEUScore(n_gram=n) for n in range(1, 5)}
            metrics["cider"] = CIDErD()
            setattr(self, f"{split}_metrics", MetricCollection(metrics, prefix=f"{split}/"))

    # Encoder freezing --------------------------------------------------------------------

    def _set_encoder_trainable(self, trainable: bool) -> None:
        self.encoder_trainable = trainable
        self.encoder.requires_grad_(trainable)
        self.encoder.train(self.training and trainable)

    def train(self, mode: bool = True) -> Captioner:
        """As ``nn.Module.train``, but a frozen encoder stays in eval mode (fixed BatchNorm
        statistics) whatever Lightning switches the task to."""
        super().train(mode)
        if not self.encoder_trainable:
            self.encoder.eval()
        return self

    def on_fit_start(self) -> None:
        if not self.encoder_trainable:
            log.info(
                "The encoder is frozen: its %d modules stay in eval mode (fixed BatchNorm "
                "statistics), which is what Lightning's warning about modules in eval mode "
                "refers to.",
                sum(1 for _ in self.encoder.modules()),
            )

    def on_train_epoch_start(self) -> None:
        start = self.hparams["fine_tune_encoder_from_epoch"]
        trainable = start is not None and self.current_epoch >= start
        if trainable != self.encoder_trainable:
            self._set_encoder_trainable(trainable)

    def feature_encoder(self) -> tuple[nn.Module, str] | None:
        """The frozen encoder and a key naming it (its config and a digest of its weights), for
        a datamodule that caches features; None when the encoder is ever trained."""
        if self.hparams["fine_tune_encoder_from_epoch"] is not None:
            return None
        digest = hashlib.sha1()
        for name, tensor in sorted(self.encoder.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        config = ",".join(f"{k}={v}" for k, v in sorted(self.hparams["encoder"].items()))
        return self.encoder, f"{config}|{digest.hexdigest()}"

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams["pretrained"] == "torchvision":
            arch = self.hparams["encoder"].get("arch", "resnet50")
            self.encoder.load_imagenet_state(torchvision_state_dict(arch))

    def parameter_groups(self, settings: OptimizerSettings) -> list[dict[str, Any]]:
        """The decoder's groups at ``optimizer.lr`` and, when it is ever fine-tuned, the
        encoder's (frozen until then) at ``encoder_lr``; one warm-up + cosine schedule scales
        both."""
        groups = decay_groups(self.decoder, settings.weight_decay, include_frozen=True)
        if self.hparams["fine_tune_encoder_from_epoch"] is not None:
            groups += decay_groups(
                self.encoder,
                settings.weight_decay,
                include_frozen=True,
                part="encoder",
                lr=self.hparams["encoder_lr"],
            )
        return [group for group in groups if group["params"]]

    def configure_callbacks(self) -> list[Callback]:
        figures = self.hparams["figures"]
        present = {type(c) for c in self.trainer.callbacks}
        if figures is None or CaptionFigures in present:
            return []
        return [CaptionFigures(self.trainer.default_root_dir, **figures)]

    # Computation -------------------------------------------------------------------------

    def encode(self, inputs: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` -> the encoder's grid ``(B, N, D)``; a grid (cached
        features) is passed through."""
        if inputs.ndim == 3:
            return inputs
        if self.encoder_trainable:
            return self.encoder(inputs)
        with torch.no_grad():
            return self.encoder(inputs)

    def caption_loss(self, grid: Tensor, batch: CaptionedImages) -> tuple[Tensor, Tensor]:
        """``(cross-entropy, regulariser)`` of teacher-forced decoding of every caption of the
        batch from its image's grid ``(B, N, D)``."""
        inputs, targets = batch.captions[:, :-1], batch.captions[:, 1:]
        output = self.decoder(grid[batch.caption_image], inputs)
        pad_id = self.tokenizer.pad_id
        cross_entropy = caption_cross_entropy(output.logits, targets, pad_id)
        regulariser = cross_entropy.new_zeros(())
        if output.attention is not None:
            penalty = doubly_stochastic_penalty(output.attention.float(), targets != pad_id)
            regulariser = self.hparams["attention_regularization"] * penalty.mean()
        return cross_entropy, regulariser

    def training_step(self, batch: CaptionedImages, batch_idx: int) -> Tensor:
        cross_entropy, regulariser = self.caption_loss(self.encode(batch.images), batch)
        loss = cross_entropy + regulariser
        self.check_finite(loss)
        size = batch.captions.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/cross_entropy", cross_entropy, on_step=True, batch_size=size)
        if self.decoder.uses_attention:
            self.log("train/attention_reg", regulariser, on_step=True, batch_size=size)
        return loss

    def decode(self, grid: Tensor, beam_size: int | None = None) -> Decoded:
        """Captions of grids ``(B, N, D)``: greedy for beam size 1, else beam search."""
        settings = self.hparams["decoding"]
        beam = int(beam_size or settings["beam_size"])
        max_length = settings["max_length"]
        if max_length is None:
            longest = self.spec.metadata.get("max_caption_words", 20)
            max_length = int(longest) + DECODE_MARGIN
        start, end = self.tokenizer.start_id, self.tokenizer.end_id
        if beam == 1:
            return greedy_decode(self.decoder, grid, start, end, max_length)
        penalty = float(settings["length_penalty"])
        return beam_search(self.decoder, grid, start, end, max_length, beam, penalty)

    def set_decoding(
        self, beam_size: int | None = None, length_penalty: float | None = None
    ) -> None:
        """Decode with another beam size or length penalty from now on (None keeps one)."""
        if beam_size is not None:
            _check_beam_size(beam_size)
            self.hparams["decoding"]["beam_size"] = int(beam_size)
        if length_penalty is not None:
            self.hparams["decoding"]["length_penalty"] = float(length_penalty)

    def _decoded_text(self, decoded: Decoded) -> list[str]:
        return [self.tokenizer.decode(row) for row in decoded.tokens.tolist()]

    def _evaluate(self, batch: CaptionedImages, split: str) -> None:
        grid = self.encode(batch.images)
        cross_entropy, regulariser = self.caption_loss(grid, batch)
        size = len(batch.names)
        self.log(f"{split}/loss", cross_entropy + regulariser, batch_size=size, sync_dist=True)
        self.log(f"{split}/cross_entropy", cross_entropy, batch_size=size, sync_dist=True)
        generated = self._decoded_text(self.decode(grid))
        # Shortest first: where two references are equally close in length to the candidate,
        # torchmetrics' brevity penalty takes the first, coco-caption's the shorter one.
        references = [sorted(refs, key=lambda r: len(r.split())) for refs in batch.references]
        metrics: MetricCollection = getattr(self, f"{split}_metrics")
        metrics.update(generated, references)

    def _log_metrics(self, split: str) -> None:
        metrics: MetricCollection = getattr(self, f"{split}_metrics")
        self.log_dict(metrics.compute(), prog_bar=True, sync_dist=False)
        metrics.reset()

    def validation_step(self, batch: CaptionedImages, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def test_step(self, batch: CaptionedImages, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    @torch.no_grad()
    def caption(self, inputs: Tensor, beam_size: int | None = None) -> list[GeneratedCaption]:
        """Caption images ``(B, 3, H, W)`` (normalised as the spec says) or encoder grids
        ``(B, N, D)`` with the configured decoding (``beam_size`` overrides its beam)."""
        was_training = self.training
        self.eval()
        grid = self.encode(inputs.to(self.device))
        decoded = self.decode(grid, beam_size)
        self.train(was_training)
        height, width = self.encoder.grid_shape(self.spec.image_size)
        captions = []
        for index, row in enumerate(decoded.tokens.tolist()):
            words = self.tokenizer.decode(row).split()
            attention = None
            if decoded.attention is not None:
                maps = decoded.attention[index, : len(words)].float().cpu()
                attention = maps.reshape(len(words), height, width)
            captions.append(GeneratedCaption(words, attention, float(decoded.scores[index])))
        return captions

    def apply_eval_options(self, options: PredictionOptions) -> None:
        """eval.py's ``beam_size`` and ``length_penalty`` (null keeps the checkpoint's)."""
        self.set_decoding(options.get("beam_size"), options.get("length_penalty"))

    def predict_inputs(
        self, inputs: PredictionInputs, options: PredictionOptions
    ) -> list[Prediction]:
        """A caption of each image and, for attention decoders, the figure of where the model
        looked for each word (``attention``)."""
        predictions = []
        for image, generated in zip(
            inputs.images, self.caption(stacked_pixels(inputs.images)), strict=True
        ):
            text = " ".join(generated.words)
            figures = {}
            if generated.attention is not None:
                figures["attention"] = attention_figure(
                    image.picture, generated.words, generated.attention
                )
            predictions.append(Prediction(image.path, [f"{image.path}: {text}"], figures, text))
        return predictions
