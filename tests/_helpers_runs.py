"""Run folders built by the tests: a real config composed from conf/ with the given overrides,
saved as train.py saves it, and metrics and a result written with glimpse's own writers."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import compose_train
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from glimpse.run_folder import CONFIG_FILE, append_metrics, write_result


def make_run(
    folder: Path,
    overrides: list[str],
    val: dict[int, dict[str, float]],
    test: dict[str, float] | None = None,
) -> Path:
    """A run folder: ``config_resolved.yaml`` and Hydra's ``.hydra/hydra.yaml`` (its group
    choices) for ``overrides``, a ``val`` record per step with the given values (each after a
    train record), and, when ``test`` is given, the test record and ``result.json`` of a run
    that finished."""
    cfg = compose_train(overrides, folder)
    folder.mkdir(parents=True)
    OmegaConf.save(cfg, folder / CONFIG_FILE, resolve=True)
    choices = dict(HydraConfig.get().runtime.choices)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}})
    )
    step = 0
    for step, values in val.items():
        append_metrics(folder, {"stage": "train", "step": step, "epoch": 0, "train/loss": 9.0})
        append_metrics(folder, {"stage": "val", "step": step, "epoch": 0, **values})
    if test is not None:
        append_metrics(folder, {"stage": "test", "step": step, "epoch": 1, **test})
        last_val = list(val.values())[-1]
        write_result(folder, cfg.optimized_metric, last_val[cfg.optimized_metric], last_val | test)
    return folder
