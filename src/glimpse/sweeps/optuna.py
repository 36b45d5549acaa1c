"""Hydra's Optuna sweeper, resumable: the study lives in its storage (SQLite in the sweep
folder), so running the sweep's command again with ``resume_sweep=<sweep folder>`` goes on
where it stopped.

On resume the sweeper

1. loads the study: its finished trials count towards ``n_trials`` and inform the sampler, so
   they are not proposed again;
2. runs each trial the interruption left RUNNING again, with its own parameters and in its own
   job folder (trial ``n`` is job ``n``), where the job continues from its checkpoint
   (:mod:`glimpse.sweeps.resume`), and tells the study its result;
3. asks for the trials still to go, numbered on from the study's, with the sampler restored from
   ``optuna_sampler.pkl`` (saved after every batch of proposals, as Optuna's documentation
   recommends for reproducible resumption), so it proposes what the uninterrupted sweep would.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from optuna.trial import TrialState

from glimpse.errors import ConfigError

log = logging.getLogger(__name__)

#: The sampler, pickled into the sweep folder after each batch of proposals.
SAMPLER_FILE = "optuna_sampler.pkl"


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    """:class:`OptunaSweeperImpl` that resumes the study found in its storage (see the module)."""

    def sweep(self, arguments: list[str]) -> None:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)  # before SQLite opens a file in it
        if self.config.get("resume_sweep") is not None and self.storage is None:
            raise ConfigError(
                "resume_sweep= with the Optuna sweeper needs its study in a storage: set "
                "hydra.sweeper.storage=sqlite:///${hydra.sweep.dir}/optuna.db (as "
                "hparams_search=charlm_optuna does) when starting the sweep."
            )
        study = self._stored_study()
        if study is not None:
            _, fixed_params = create_params_from_overrides(
                self._parse_sweeper_params_config() + list(arguments)
            )
            self._resume(study, sweep_dir, fixed_params)
        super().sweep(arguments)

    def _configure_trials(self, trials, search_space_distributions, fixed_params):
        overrides = super()._configure_trials(trials, search_space_distributions, fixed_params)
        self._save_sampler()
        return overrides

    def _stored_study(self) -> optuna.Study | None:
        if self.storage is None:
            return None
        names = [summary.study_name for summary in optuna.get_all_study_summaries(self.storage)]
        if self.study_name not in names:
            return None
        return optuna.load_study(study_name=self.study_name, storage=self.storage)

    def _resume(self, study: optuna.Study, sweep_dir: Path, fixed_params: dict[str, Any]) -> None:
        sampler_file = sweep_dir / SAMPLER_FILE
        if sampler_file.is_file():
            with open(sampler_file, "rb") as file:
                self.sampler = pickle.load(file)
        else:
            log.warning(
                "%s is missing: the resumed sweep's proposals may differ from an "
                "uninterrupted one's.",
                sampler_file,
            )
        interrupted = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        log.info(
            "Resuming study %s: %d trials done, %d interrupted.",
            study.study_name,
            len(study.trials) - len(interrupted),
            len(interrupted),
        )
        for trial in interrupted:
            self._run_again(study, trial, fixed_params)
        self.job_idx = len(study.trials)
        self.n_trials = max(0, self.n_trials - len(study.trials))

    def _run_again(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, fixed_params: dict[str, Any]
    ) -> None:
        """Run an interrupted trial again, with its parameters and this command's fixed ones
        (``resume_sweep`` among them), in job folder ``trial.number``; tell its result."""
        params: dict[str, Any] = {**trial.params, **fixed_params}
        overrides = tuple(f"{name}={value}" for name, value in params.items())
        (job,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
        try:
            value = float(job.return_value)
        except Exception as error:  # the job failed, or returned no number: as Hydra's loop does
            log.warning("Failed experiment: %s", error)
            study.tell(trial.number, state=TrialState.FAIL)
            return
        study.tell(trial.number, value)

    def _save_sampler(self) -> None:
        sampler_file = Path(str(self.config.hydra.sweep.dir)) / SAMPLER_FILE
        partial = sampler_file.with_name(sampler_file.name + ".partial")
        with open(partial, "wb") as file:
            pickle.dump(self.sampler, file)
        os.replace(partial, sampler_file)
