"""What the tasks' picture callbacks share: when to draw, where PNGs go, which loggers get them.

Each callback draws after validation passes (never the sanity check), every
``every_n_validations``-th one, writes PNG files to ``<output_dir>/figures/`` named after the
global step, and sends them to every WandbLogger of the trainer.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from matplotlib.figure import Figure

from glimpse.plotting import save_figure


def wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    """The trainer's Weights & Biases loggers."""
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


class FigureCallback(L.Callback):
    """Base of the picture callbacks.

    Args:
        output_dir: the run directory; pictures go to its ``figures/`` folder.
        num_images: validation images drawn.
        every_n_validations: draw every n-th validation pass only.
    """

    def __init__(self, output_dir: str, num_images: int, every_n_validations: int = 1) -> None:
        if num_images < 1 or every_n_validations < 1:
            raise ValueError(
                f"figures.num_images={num_images} and figures.every_n_validations="
                f"{every_n_validations} must be at least 1."
            )
        self.folder = Path(output_dir) / "figures"
        self.num_images = num_images
        self.every_n_validations = every_n_validations
        self.validations = 0

    def collects_from(self, trainer: L.Trainer, dataloader_idx: int, source: int = 0) -> bool:
        """Whether a validation batch is one to keep images from: during the first validation
        pass (not the sanity check), on rank zero, from dataloader ``source`` (the first, or a
        task's query loader), so the same images are drawn every time."""
        return (
            not trainer.sanity_checking
            and self.validations == 0
            and dataloader_idx == source
            and trainer.is_global_zero
        )

    def count_validation(self, trainer: L.Trainer) -> bool:
        """Count a finished validation pass (not the sanity check); True when this one is to be
        drawn (every ``every_n_validations``-th, starting with the first)."""
        if trainer.sanity_checking:
            return False
        self.validations += 1
        return (self.validations - 1) % self.every_n_validations == 0

    def save(self, figure: Figure, name: str) -> Path:
        """Write ``figure`` as ``<output_dir>/figures/<name>`` and close it."""
        return save_figure(figure, self.folder / name)
