"""A Hydra callback that tells where a sweep's runs went when it ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from glimpse.utils.console import console


class SweepFolderReport(Callback):
    """At the end of a multirun, print the sweep folder (one sub-folder per job) on stderr."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir)
        jobs = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
        console.print(
            f"Sweep folder: {folder} ({len(jobs)} jobs: {', '.join(jobs)})", soft_wrap=True
        )
