"""glimpse's Hydra plugins (Hydra finds plugins only in the ``hydra_plugins`` namespace)."""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

from glimpse.sweeps.optuna import ResumableOptunaSweeperImpl


class ResumableOptunaSweeper(OptunaSweeper):
    """Hydra's Optuna sweeper that resumes its stored study (:mod:`glimpse.sweeps.optuna`).
    Same settings as ``hydra/sweeper=optuna``; select it with
    ``hydra.sweeper._target_=hydra_plugins.glimpse_sweepers.ResumableOptunaSweeper``."""

    def __init__(self, **settings: Any) -> None:
        self.sweeper = ResumableOptunaSweeperImpl(**settings)
