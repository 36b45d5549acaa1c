"""Pictures of a captioner after each validation pass: sample validation images with their
generated and reference captions and, for attention decoders, where the model looked for each
word (Xu et al., "Show, Attend and Tell", ICML 2015, figures 2 and 3).

Each picture is a PNG in ``<output_dir>/figures/`` named after the global step; every
WandbLogger gets a ``val/captions`` Table (image, generated, references) and the attention
pictures as ``val/attention`` images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from glimpse.callbacks.figures import FigureCallback, wandb_loggers
from glimpse.plotting import unnormalise
from glimpse.plotting.captions import attention_figure, caption_grid_figure


class CaptionFigures(FigureCallback):
    """After each validation pass (not the sanity check), caption ``num_images`` validation
    images (the first of the first pass, the same ones every time) with ``pl_module.caption``
    and draw them with their references, plus one attention picture per image when the decoder
    attends.

    Batches are :class:`~glimpse.batches.CaptionedImages`. With normalised images
    ``(B, 3, H, W)`` the pictures show them unnormalised with the spec's mean and std; with
    cached encoder grids ``(B, N, D)`` the grids are captioned and the pictures come from
    ``trainer.datamodule.display_image("val", name)``.

    Args:
        output_dir: the run directory; pictures go to its ``figures/`` folder.
        num_images: validation images captioned.
        every_n_validations: draw every n-th validation pass only.
    """

    def __init__(self, output_dir: str, num_images: int = 4, every_n_validations: int = 1) -> None:
        super().__init__(output_dir, num_images, every_n_validations)
        #: Per kept image: the model input ``(3, H, W)`` or ``(N, D)`` on the CPU.
        self.inputs: list[Tensor] = []
        self.names: list[str] = []
        self.references: list[tuple[str, ...]] = []
        #: ``(n, H, W, 3)`` in [0, 1], made at the first drawing.
        self._pixels: np.ndarray | None = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """During the first validation pass, keep the first ``num_images`` images."""
        if not self.collects_from(trainer, dataloader_idx):
            return
        take = self.num_images - len(self.inputs)
        for position in range(min(take, len(batch.names))):
            self.inputs.append(batch.images[position].detach().cpu())
            self.names.append(batch.names[position])
            self.references.append(tuple(batch.references[position]))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.count_validation(trainer) or not trainer.is_global_zero or not self.inputs:
            return
        step = trainer.global_step
        captions = pl_module.caption(torch.stack(self.inputs))
        pixels = self._display_pixels(trainer, pl_module)
        generated = [" ".join(caption.words) for caption in captions]
        figure = caption_grid_figure(pixels, generated, self.references)
        self.save(figure, f"captions_step{step:07d}.png")
        attention_paths = [
            self.save(
                attention_figure(pixels[index], caption.words, caption.attention),
                f"attention_step{step:07d}_{index}.png",
            )
            for index, caption in enumerate(captions)
            if caption.attention is not None
        ]
        self._log_wandb(trainer, pixels, generated, attention_paths, step)

    def _log_wandb(
        self,
        trainer: L.Trainer,
        pixels: np.ndarray,
        generated: Sequence[str],
        attention_paths: Sequence[Path],
        step: int,
    ) -> None:
        """The ``val/captions`` Table and the ``val/attention`` images, to every WandbLogger."""
        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        import wandb

        rows = [
            [wandb.Image((image * 255).round().astype(np.uint8)), text, "\n".join(refs)]
            for image, text, refs in zip(pixels, generated, self.references, strict=True)
        ]
        for logger in loggers:
            logger.log_table("val/captions", ["image", "generated", "references"], rows, step=step)
            if attention_paths:
                paths = [str(path) for path in attention_paths]
                logger.log_image(key="val/attention", images=paths, step=step)

    def _display_pixels(self, trainer: L.Trainer, pl_module: L.LightningModule) -> np.ndarray:
        """The kept images as ``(n, H, W, 3)`` in [0, 1]."""
        if self._pixels is None:
            if self.inputs[0].ndim == 3:
                spec = pl_module.spec
                self._pixels = unnormalise(torch.stack(self.inputs), spec.mean, spec.std)
            else:
                shown = [trainer.datamodule.display_image("val", name) for name in self.names]
                self._pixels = torch.stack(shown).permute(0, 2, 3, 1).float().numpy()
        return self._pixels
