"""Pictures of a translation model after each validation pass: where it looked in the source for
each word it wrote (the alignment matrices of Bahdanau et al. 2015, figure 3).

The source sentences are the first validation ones, the same every time. Each picture is a PNG
in ``<output_dir>/figures/`` named after the global step; every WandbLogger gets a
``val/translations`` Table (source, translation, references) and the pictures as
``val/attention`` images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from glimpse.callbacks.figures import FigureCallback, wandb_loggers


def alignment_figure(
    source_tokens: Sequence[str], target_tokens: Sequence[str], weights: Tensor | np.ndarray
) -> Figure:
    """The attention weights ``(T, S)`` as a grey-scale matrix: one row per target token (what
    was written), one column per source token (what was read); white is weight 1."""
    weights = torch.as_tensor(weights).float().cpu().numpy()
    if weights.shape != (len(target_tokens), len(source_tokens)):
        raise ValueError(
            f"alignment_figure got {len(target_tokens)} target and {len(source_tokens)} source "
            f"tokens but weights of shape {tuple(weights.shape)}; pass (target, source) weights."
        )
    width = 1.2 + 0.45 * max(len(source_tokens), 2)
    height = 1.2 + 0.38 * max(len(target_tokens), 2)
    figure = plt.figure(figsize=(width, height), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    axes.imshow(weights, cmap="gray", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(source_tokens)), [repr(t)[1:-1] for t in source_tokens])
    axes.set_yticks(range(len(target_tokens)), [repr(t)[1:-1] for t in target_tokens])
    axes.tick_params(axis="x", labelrotation=90, labeltop=True, labelbottom=False)
    axes.set_xlabel("source")
    axes.set_ylabel("translation")
    return figure


class TranslationFigures(FigureCallback):
    """After each validation pass (not the sanity check), translate ``num_sentences`` validation
    sources with ``pl_module.translate`` and draw each one's attention matrix (attention models
    only), plus the wandb table of translations.

    Batches are :class:`~glimpse.batches.SentencePairs`.

    Args:
        output_dir: the run directory; pictures go to its ``figures/`` folder.
        num_sentences: validation sources translated.
        every_n_validations: draw every n-th validation pass only.
    """

    def __init__(
        self, output_dir: str, num_sentences: int = 4, every_n_validations: int = 1
    ) -> None:
        super().__init__(output_dir, num_sentences, every_n_validations)
        self.texts: list[str] = []
        self.references: list[tuple[str, ...]] = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """During the first validation pass, keep the first ``num_sentences`` sources."""
        if (
            trainer.sanity_checking
            or self.validations > 0
            or dataloader_idx != 0
            or not trainer.is_global_zero
        ):
            return
        take = self.num_images - len(self.texts)
        self.texts += list(batch.texts[:take])
        self.references += [tuple(refs) for refs in batch.references[:take]]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.count_validation(trainer) or not trainer.is_global_zero or not self.texts:
            return
        step = trainer.global_step
        translations = pl_module.translate(self.texts)
        paths = [
            self.save(
                alignment_figure(t.source_tokens, t.target_tokens, t.attention),
                f"attention_step{step:07d}_{index}.png",
            )
            for index, t in enumerate(translations)
            if t.attention is not None
        ]
        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        rows = [
            [text, t.text, "\n".join(refs)]
            for text, t, refs in zip(self.texts, translations, self.references, strict=True)
        ]
        for logger in loggers:
            columns = ["source", "translation", "references"]
            logger.log_table("val/translations", columns, rows, step=step)
            if paths:
                logger.log_image(key="val/attention", images=[str(p) for p in paths], step=step)


__all__ = ["TranslationFigures", "alignment_figure"]
