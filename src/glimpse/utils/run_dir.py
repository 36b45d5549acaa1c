"""OmegaConf resolvers used by the configs.

``${run_id:}`` is a short random id drawn once per process. The run and sweep directories end
in it, so two jobs started in the same second never share a folder. It is constant within a
process, so every resolution of ``hydra.run.dir`` gives the same path (Lightning's DDP launcher
re-reads it to send its worker processes to the same folder).

``${cwd:}`` is the directory the command was started from. ``paths.root_dir`` uses it rather
than ``${hydra:runtime.cwd}``, which exists only inside a job: Hydra's sweepers resolve
``hydra.sweep.dir`` (under ``paths.log_dir``) before any job has started.
"""

from __future__ import annotations

import os
import uuid

from omegaconf import OmegaConf

RUN_ID = uuid.uuid4().hex[:6]


def register_resolvers() -> None:
    """Register ``run_id`` and ``cwd``; safe to call more than once."""
    OmegaConf.register_new_resolver("run_id", lambda: RUN_ID, replace=True)
    OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)
