"""Evaluations of a trained checkpoint other than its test split: ``python eval.py
ckpt_path=PATH eval=NAME``.

Each module here has ``evaluate(task, data_cfg, cfg) -> dict[str, float]``: ``task`` is the
rebuilt LightningModule, ``data_cfg`` the data config to evaluate on (the command line's, else
the checkpoint's), ``cfg`` the whole eval config (its ``eval``-named section holds the options).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from omegaconf import DictConfig

#: ``eval=`` choices and the module implementing each.
EVALUATIONS = {
    "linear": "glimpse.evaluation.linear_probe",
    "knn": "glimpse.evaluation.knn",
    "zeroshot": "glimpse.evaluation.zeroshot",
    "retrieval": "glimpse.evaluation.retrieval",
}


def run_evaluation(
    name: str, task: Any, data_cfg: DictConfig | None, cfg: DictConfig
) -> dict[str, float]:
    """Run the evaluation ``name`` (a key of :data:`EVALUATIONS`) of ``task`` on ``data_cfg``."""
    if name not in EVALUATIONS:
        raise ValueError(
            f"eval={name!r} is not an evaluation; use one of {', '.join(EVALUATIONS)}, or leave "
            "it out to test on the checkpoint's data."
        )
    return import_module(EVALUATIONS[name]).evaluate(task, data_cfg, cfg)
