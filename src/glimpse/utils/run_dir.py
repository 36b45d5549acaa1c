"""OmegaConf resolvers used by the configs.

``${run_id:}`` is a short random id drawn once per process. The run and sweep directories end
in it, so two jobs started in the same second never share a folder. It is constant within a
process, so every resolution of ``hydra.run.dir`` gives the same path (Lightning's DDP launcher
re-reads it to send its worker processes to the same folder). Its value is cached in the config,
as ``${now:}``'s is: the submitit launcher pickles the sweep's config into each SLURM job, and
a job (or a requeued job) resolving ``hydra.sweep.dir`` again in its own process must get the
sweep folder the launcher created, not one with a new id.

``${cwd:}`` is the directory the command was started from. ``paths.root_dir`` uses it rather
than ``${hydra:runtime.cwd}``, which exists only inside a job: Hydra's sweepers resolve
``hydra.sweep.dir`` (under ``paths.log_dir``) before any job has started. It is cached too, so
a SLURM job started in another directory still writes under the submitting command's.

``${sweep_dir:${resume_sweep},<new folder>}`` is ``hydra.sweep.dir``: the folder that
``resume_sweep=`` names, or a new one.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from omegaconf import OmegaConf

from glimpse.errors import MissingFileError

RUN_ID = uuid.uuid4().hex[:6]


def sweep_dir(resume_sweep: str | None, new_sweep: str) -> str:
    """``resume_sweep`` as an absolute path when it is set (it must be an existing folder),
    else ``new_sweep``."""
    if resume_sweep is None:
        return new_sweep
    folder = Path(resume_sweep).expanduser().resolve()
    if not folder.is_dir():
        raise MissingFileError(
            f"resume_sweep={resume_sweep} is not a folder; name the sweep folder to resume, "
            "e.g. logs/train/multiruns/<date>_<time>_<id>."
        )
    return str(folder)


def register_resolvers() -> None:
    """Register ``run_id``, ``cwd`` and ``sweep_dir``; safe to call more than once."""
    OmegaConf.register_new_resolver("run_id", lambda: RUN_ID, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("sweep_dir", sweep_dir, replace=True)
