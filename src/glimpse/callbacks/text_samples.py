"""Sample text at every validation, save it in the run directory and log it to wandb."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.panel import Panel
from rich.text import Text


class TextSampleCallback(L.Callback):
    """After each validation pass, generate ``num_chars`` characters after ``prompt``.

    Samples are written to ``<output_dir>/samples/step_<global step>.txt``, printed, and logged
    to every WandbLogger as a ``samples`` Table with one row per validation (step, prompt, text).

    Args:
        output_dir: the run directory.
        prompt: what the model continues; an empty prompt starts from a newline.
        num_chars: characters to generate.
        temperature, top_k: sampling parameters (see :mod:`glimpse.models.sampling`).
        seed: seeds the sampler, so samples differ between steps only through the weights.
    """

    def __init__(
        self,
        output_dir: str,
        prompt: str = "\n",
        num_chars: int = 300,
        temperature: float = 0.8,
        top_k: int | None = None,
        seed: int = 0,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.prompt = prompt or "\n"
        self.num_chars = num_chars
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed
        self.rows: list[list] = []

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        text = pl_module.generate(
            self.prompt, self.num_chars, self.temperature, self.top_k, seed=self.seed
        )
        step = trainer.global_step
        folder = self.output_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"step_{step:07d}.txt").write_text(self.prompt + text, encoding="utf-8")
        Console(stderr=True).print(
            Panel(Text(self.prompt + text), title=f"sample at step {step}", expand=False)
        )
        self.rows.append([step, self.prompt, text])
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_text(
                    "samples", columns=["step", "prompt", "text"], data=self.rows, step=step
                )
