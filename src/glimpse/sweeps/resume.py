"""A job started again in its own folder: by ``resume_sweep=<sweep folder>``, or by SLURM
requeueing it.

What the folder holds decides what the job does (see :mod:`glimpse.run_folder`):

- ``result.json``: the job finished; its stored result is returned, nothing is trained;
- a checkpoint (``checkpoints/last.ckpt``, or Lightning's ``hpc_ckpt_<n>.ckpt`` written when
  SLURM signalled the job): training continues from the newer of them;
- neither: the job never got as far as a checkpoint and trains from the start.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from glimpse.errors import ConfigError
from glimpse.run_folder import (
    CONFIG_FILE,
    LAST_CHECKPOINT,
    LAUNCH_KEYS,
    RunResult,
    flatten,
    read_config,
    read_result,
)

log = logging.getLogger(__name__)

#: Set by SLURM in a job it has requeued (0 or unset the first time).
SLURM_RESTARTS = "SLURM_RESTART_COUNT"


@dataclass(frozen=True)
class ResumePoint:
    """Where a job started again in its own folder picks up: its stored ``result`` when it had
    finished, else the ``checkpoint`` to continue from (None: from the start)."""

    result: RunResult | None
    checkpoint: Path | None


def requeued_by_slurm() -> bool:
    """Whether this process is a SLURM job that SLURM requeued (preempted, or requeued by
    Lightning's auto-requeue on the time-limit signal)."""
    return int(os.environ.get(SLURM_RESTARTS) or 0) > 0


def resume_point(cfg: DictConfig, output_dir: Path, in_sweep: bool) -> ResumePoint | None:
    """What the job whose folder is ``output_dir`` does, or None for an ordinary run (no
    ``resume_sweep``, not requeued by SLURM).

    With ``resume_sweep`` the run must be a job of that sweep (a multirun, ``in_sweep``), and the
    folder's earlier config must equal this one: resuming with another command would mix two
    experiments in one folder.
    """
    sweep = cfg.get("resume_sweep")
    if sweep is None and not requeued_by_slurm():
        return None
    if sweep is not None:
        if not in_sweep:
            raise ConfigError(
                "resume_sweep= resumes a multirun: run the sweep's command again with -m, "
                f"python train.py -m <its overrides> resume_sweep={sweep}."
            )
        if not output_dir.resolve().is_relative_to(Path(sweep).resolve()):
            raise ConfigError(
                f"This job's folder {output_dir} is not inside resume_sweep={sweep}; leave "
                "hydra.sweep.dir unset when resuming (resume_sweep sets it)."
            )
    _check_same_config(cfg, output_dir)
    result = read_result(output_dir)
    if result is not None:
        log.info(
            "Job %s had finished: %s=%s, not trained again.",
            output_dir,
            result.optimized_metric,
            result.value,
        )
        return ResumePoint(result, None)
    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is None:
        log.info("Job %s has no checkpoint yet: it trains from the start.", output_dir)
    else:
        log.info("Job %s resumes from %s.", output_dir, checkpoint)
    return ResumePoint(None, checkpoint)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest of ``output_dir/checkpoints/last.ckpt`` and Lightning's HPC checkpoints
    (``output_dir/hpc_ckpt_<n>.ckpt``, saved on SLURM's signal), or None."""
    candidates = [output_dir / LAST_CHECKPOINT, *output_dir.glob("hpc_ckpt_*.ckpt")]
    existing = [path for path in candidates if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime_ns, default=None)


def _check_same_config(cfg: DictConfig, output_dir: Path) -> None:
    if not (output_dir / CONFIG_FILE).is_file():
        return
    stored = flatten(read_config(output_dir))
    current = flatten(OmegaConf.to_container(cfg, resolve=True))
    differing = [
        key
        for key in dict.fromkeys([*stored, *current])
        if key not in LAUNCH_KEYS and stored.get(key, _ABSENT) != current.get(key, _ABSENT)
    ]
    if differing:
        shown = "; ".join(
            f"{key}={_show(stored.get(key, _ABSENT))} then, {_show(current.get(key, _ABSENT))} now"
            for key in differing[:3]
        )
        raise ConfigError(
            f"{output_dir} was trained with another config ({shown}); resume a sweep with the "
            "command that started it, plus resume_sweep=."
        )


_ABSENT = object()


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else str(value)
