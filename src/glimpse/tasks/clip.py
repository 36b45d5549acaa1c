"""CLIP (Radford et al. 2021; lecture 9's CLIP slides) as a task: contrastive image-text
pre-training, with retrieval and zero-shot classification measured during training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from glimpse.batches import IMAGE_TEXT, ImageTextPairs, LabelledImages
from glimpse.data.text.bpe import BPETokenizer
from glimpse.metrics.retrieval import pair_recalls
from glimpse.models.clip_loss import clip_loss, distributed_rank_and_size
from glimpse.models.zeroshot import resolve_templates, zero_shot_classifier
from glimpse.prediction import (
    Prediction,
    PredictionInputs,
    PredictionOptions,
    ranked_classes,
    stacked_pixels,
)
from glimpse.tasks.base import GlimpseTask, plain

#: Zero-shot settings when the config gives none.
ZEROSHOT_DEFAULTS = {
    "templates": "simple",
    "template_sets": {"simple": ["a photo of a {}."]},
    "every_n_validations": 1,
}


class CLIPTask(GlimpseTask):
    """Train CLIP on image-text pairs with the symmetric contrastive loss.

    Training: the image and text embeddings of a batch (L2-normalised) and the clamped scale
    ``s = exp(t)`` give :func:`~glimpse.models.clip_loss.clip_loss`; under DDP every rank
    gathers the embeddings of all ranks with gradients, so the negatives are the global
    batch's. After every optimizer step the logit-scale parameter is clamped into
    ``[0, log 100]`` (the paper, sec. 2.5). Logs ``train/loss`` and ``train/logit_scale`` (s).

    Validation and test, per pass:

    * on the image-text pairs: ``loss`` (the contrastive loss of each batch on its own),
      and recall@K for K in ``retrieval_ks`` in both directions over the pass's pairs,
      gathered from all ranks (``i2t_recall{K}``, ``t2i_recall{K}`` and their mean
      ``recall_mean``; :mod:`glimpse.metrics.retrieval`; an image's several captions all
      count as its own);
    * on labelled images (the datamodule's zero-shot loader, when the spec's metadata names
      ``zeroshot_classes``): ``zeroshot_acc1`` and ``zeroshot_acc5`` (top-``min(5, C)``) of
      the zero-shot classifier built from the class names and the prompt templates, at every
      ``every_n_validations``-th validation (and always in testing and the sanity check).

    The optimizer is AdamW with warm-up and cosine decay (:class:`GlimpseTask`); biases,
    norm gains, the logit scale, the token and position embeddings and the class token are
    not decayed.

    Args:
        spec: the DataSpec as a dict: its ``tokenizer`` (:class:`~glimpse.data.text.bpe.
            BPETokenizer`'s dict), ``metadata["context_length"]``, image size and, for
            zero-shot validation, ``metadata["zeroshot_classes"]``.
        net: Hydra config of the model (:mod:`glimpse.models.clip`, e.g. ``{"_target_":
            "glimpse.models.clip.clip_cpu"}``); ``vocab_size``, ``pad_id`` and
            ``context_length`` are filled in from the tokenizer, and ``vision.image_size``
            from the spec unless the config sets it.
        optimizer: AdamW arguments (lr, weight_decay, betas, eps).
        scheduler: warmup_steps and min_lr_ratio of the cosine schedule.
        zeroshot: ``templates`` (a name in ``template_sets``, or a list of templates with a
            ``{}`` for the class name), ``template_sets`` (name -> templates) and
            ``every_n_validations``.
        retrieval_ks: the K of the recalls.
    """

    ACCEPTS = frozenset({IMAGE_TEXT})
    PREDICTS_FROM = frozenset({"image"})
    #: The two encoders, so that zero-shot classification (encode_image, encode_text) runs
    #: compiled too.
    NETWORKS = ("net.visual", "net.text")

    def __init__(
        self,
        spec: dict[str, Any],
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        zeroshot: dict[str, Any] | None = None,
        retrieval_ks: Sequence[int] = (1, 5, 10),
    ) -> None:
        super().__init__()
        zeroshot = {**ZEROSHOT_DEFAULTS, **(plain(zeroshot) or {})}
        self.save_hyperparameters(
            {
                "spec": plain(spec),
                "net": plain(net),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler),
                "zeroshot": zeroshot,
                "retrieval_ks": [int(k) for k in plain(retrieval_ks)],
            }
        )
        spec_ = self.spec
        if not spec_.tokenizer:
            raise ValueError(
                "CLIP needs a spec with a tokenizer: train it on image-text data "
                "(data=shapes_pairs, data=flickr8k_pairs, ...)."
            )
        if int(zeroshot["every_n_validations"]) < 1:
            raise ValueError(
                f"model.zeroshot.every_n_validations={zeroshot['every_n_validations']} must "
                "be at least 1."
            )
        self.templates = resolve_templates(zeroshot["templates"], zeroshot["template_sets"])
        self.tokenizer = BPETokenizer.from_dict(spec_.tokenizer)
        self.context_length = int(spec_.metadata.get("context_length", 77))
        self.net = self.build_net()
        self.zeroshot_classes: list[str] = list(spec_.metadata.get("zeroshot_classes") or [])
        if self.zeroshot_classes:
            num_classes = len(self.zeroshot_classes)
            for split in ("val", "test"):
                metrics = {
                    "zeroshot_acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                    "zeroshot_acc5": MulticlassAccuracy(
                        num_classes, top_k=min(5, num_classes), average="micro"
                    ),
                }
                setattr(self, f"{split}_zeroshot", MetricCollection(metrics, prefix=f"{split}/"))
        self._validations = 0
        self._zeroshot_weights: Tensor | None = None
        self._pairs: dict[str, list[Tensor]] = {}
        self._start()

    def build_net(self) -> torch.nn.Module:
        """The model of ``hparams.net`` sized for the spec's tokenizer and images."""
        config = self.hparams["net"]
        vision = dict(config.get("vision") or {})
        if self.spec.image_size is not None and vision.get("image_size") is None:
            vision["image_size"] = self.spec.image_size
        return instantiate(
            config,
            vocab_size=self.tokenizer.vocab_size,
            context_length=self.context_length,
            pad_id=self.tokenizer.pad_id,
            vision=vision,
        )

    # Features -----------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """``N`` strings -> token ids ``(N, context_length)`` on the task's device, with the
        checkpoint's tokenizer."""
        return self.tokenizer.encode(list(texts), context_length=self.context_length).to(
            self.device
        )

    def image_features(self, images: Tensor) -> Tensor:
        """``images (B, 3, H, W) -> (B, E)``: the L2-normalised image embeddings."""
        return F.normalize(self.net.encode_image(images), dim=-1)

    def text_features(self, tokens: Tensor) -> Tensor:
        """``tokens (B, L) -> (B, E)``: the L2-normalised text embeddings."""
        return F.normalize(self.net.encode_text(tokens), dim=-1)

    def zero_shot_weights(
        self, class_names: Sequence[str], templates: str | Sequence[str] | None = None
    ) -> Tensor:
        """The zero-shot classifier ``(E, C)`` of ``class_names`` from ``templates`` (a set
        name or a list; None: the configured ones), as
        :func:`~glimpse.models.zeroshot.zero_shot_classifier`."""
        chosen = self.templates
        if templates is not None:
            chosen = resolve_templates(templates, self.hparams["zeroshot"]["template_sets"])
        return zero_shot_classifier(self.net.encode_text, self.tokenize, class_names, chosen)

    @torch.no_grad()
    def classify(self, images: Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``min(k, C)`` most probable of the spec's zero-shot classes for each image
        ``(B, 3, H, W)``, with the softmax of ``s`` times the cosine similarities."""
        if not self.zeroshot_classes:
            raise ValueError(
                "This CLIP checkpoint names no classes (its data had no zero-shot set); use "
                "python eval.py ckpt_path=... eval=zeroshot data=imagefolder data.root=DIR."
            )
        was_training = self.training
        self.eval()
        weights = self.zero_shot_weights(self.zeroshot_classes)
        logits = self.net.scale() * self.image_features(images.to(self.device)) @ weights
        self.train(was_training)
        top = logits.float().softmax(dim=-1).topk(min(k, len(self.zeroshot_classes)), dim=-1)
        return [
            [(self.zeroshot_classes[i], p) for p, i in zip(ps, ids, strict=True)]
            for ps, ids in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]

    def predict_inputs(
        self, inputs: PredictionInputs, options: PredictionOptions
    ) -> list[Prediction]:
        """The ``num_classes_shown`` most probable zero-shot classes of each image."""
        rankings = self.classify(stacked_pixels(inputs.images), options.get("num_classes_shown", 5))
        return ranked_classes(inputs.images, rankings)

    # Training -----------------------------------------------------------------------------

    def training_step(self, batch: ImageTextPairs, batch_idx: int) -> Tensor:
        image_emb, text_emb, scale = self.net(batch.images, batch.tokens)
        loss = clip_loss(image_emb, text_emb, scale)
        self.check_finite(loss)
        size = batch.tokens.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/logit_scale", scale, on_step=True, batch_size=size)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.net.clamp_logit_scale_()

    # Evaluation ---------------------------------------------------------------------------

    def _zeroshot_due(self, split: str) -> bool:
        if not self.zeroshot_classes:
            return False
        if split == "test" or self.trainer.sanity_checking:
            return True
        return self._validations % int(self.hparams["zeroshot"]["every_n_validations"]) == 0

    def _start(self) -> None:
        self._pairs = {"image_emb": [], "text_emb": [], "image_ids": []}
        self._zeroshot_weights = None

    def _evaluate(self, batch: ImageTextPairs | LabelledImages, split: str) -> None:
        if isinstance(batch, LabelledImages):
            if self._zeroshot_due(split):
                self._zero_shot_step(batch, split)
            return
        image_emb, text_emb, scale = self.net(batch.images, batch.tokens)
        size = batch.tokens.shape[0]
        loss = clip_loss(image_emb, text_emb, scale, gather=False)
        self.log(f"{split}/loss", loss, batch_size=size, sync_dist=True, add_dataloader_idx=False)
        self._pairs["image_emb"].append(image_emb.float())
        self._pairs["text_emb"].append(text_emb.float())
        self._pairs["image_ids"].append(batch.image_ids)

    def _zero_shot_step(self, batch: LabelledImages, split: str) -> None:
        if self._zeroshot_weights is None:
            self._zeroshot_weights = self.zero_shot_weights(self.zeroshot_classes)
        logits = self.image_features(batch.images).float() @ self._zeroshot_weights
        getattr(self, f"{split}_zeroshot").update(logits, batch.labels)

    def _gathered(self, name: str) -> Tensor:
        """The pass's ``name`` rows (embeddings or image ids) of every rank, concatenated in
        rank order; a rank that saw no pairs (fewer val shards than ranks) adds none."""
        rows = self._pairs[name]
        if rows:
            local = torch.cat(rows)
        elif name == "image_ids":
            local = torch.empty(0, dtype=torch.long, device=self.device)
        else:
            local = torch.empty(0, self.net.embed_dim, device=self.device)
        if distributed_rank_and_size()[1] == 1:
            return local
        sizes = self.all_gather(torch.tensor(len(local), device=local.device))
        padded = local.new_zeros((int(sizes.max()), *local.shape[1:]))
        padded[: len(local)] = local
        gathered = self.all_gather(padded)
        return torch.cat([part[:n] for part, n in zip(gathered, sizes.tolist(), strict=True)])

    def _finish(self, split: str) -> None:
        """Log the pass's recalls and zero-shot accuracy. Every rank takes the same branches
        (the collectives of gathering and of torchmetrics' sync need all of them)."""
        distributed = distributed_rank_and_size()[1] > 1
        if self._pairs["image_ids"] or distributed:
            image_ids = self._gathered("image_ids")
            if len(image_ids):
                image_emb, text_emb = self._gathered("image_emb"), self._gathered("text_emb")
                recalls = pair_recalls(image_emb, text_emb, image_ids, self.hparams["retrieval_ks"])
                self.log_dict({f"{split}/{name}": value for name, value in recalls.items()})
        if self._zeroshot_due(split) and (self._zeroshot_weights is not None or distributed):
            metrics: MetricCollection = getattr(self, f"{split}_zeroshot")
            self.log_dict(metrics.compute(), prog_bar=True)
            metrics.reset()
        self._start()

    def on_validation_epoch_start(self) -> None:
        self._start()

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._finish("val")
        if not self.trainer.sanity_checking:
            self._validations += 1

    def on_test_epoch_start(self) -> None:
        self._start()

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._finish("test")
