"""What the tasks' picture callbacks share: when to draw, where PNGs go, which loggers get them.

Each callback draws after validation passes (never the sanity check), every
``every_n_validations``-th one, writes PNG files to ``<output_dir>/figures/`` named after the
global step, and sends them to every WandbLogger of the trainer.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from matplotlib import pyplot as plt
from matplotlib.figure import Figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG at ``path`` (creating its folder) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


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
