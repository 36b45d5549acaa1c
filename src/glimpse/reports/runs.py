"""Reading run folders: each run's resolved config, config-group choices and metrics."""

from __future__ import annotations

import glob
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from glimpse.errors import ConfigError, DataError, MissingFileError
from glimpse.run_folder import (
    CONFIG_FILE,
    RECORD_KEYS,
    RunResult,
    flatten,
    read_config,
    read_metrics,
    read_result,
)

#: What a string config value that names the run's own folder shows instead (so that
#: ``paths.output_dir`` and the checkpoint folder are the same in every run).
RUN_FOLDER = "<run>"


@dataclass
class Run:
    """One run folder.

    ``config`` is the resolved config flattened to dotted keys (``model.optimizer.lr``);
    ``choices`` the config-group choices Hydra recorded (``model: lstm``, ``data: shakespeare``);
    ``records`` the lines of ``metrics.jsonl``; ``result`` is None until the run finished.
    """

    path: Path
    name: str
    config: dict[str, Any]
    choices: dict[str, Any]
    records: list[dict[str, Any]]
    result: RunResult | None

    @property
    def finished(self) -> bool:
        return self.result is not None

    @property
    def last_step(self) -> int | None:
        return max((record["step"] for record in self.records), default=None)

    @property
    def optimized_metric(self) -> str:
        return str(self.config.get("optimized_metric"))

    @property
    def optimized_mode(self) -> str:
        return str(self.config.get("optimized_mode", "min"))

    def value(self, key: str) -> Any:
        """A config-group choice (``model``) or a config value (``model.optimizer.lr``); KeyError
        when the run has neither."""
        if key in self.choices:
            return self.choices[key]
        return self.config[key]

    def metric_names(self) -> set[str]:
        return {name for record in self.records for name in record if name not in RECORD_KEYS}

    def series(self, metric: str) -> list[tuple[int, float]]:
        """``(step, value)`` of every record holding ``metric``: the per-step records, or the
        epoch records for a metric logged per epoch only."""
        for stages in (("train", "val", "test"), ("train_epoch",)):
            points = [
                (record["step"], record[metric])
                for record in self.records
                if record["stage"] in stages and metric in record
            ]
            if points:
                return points
        return []

    def last(self, metric: str) -> float | None:
        points = self.series(metric)
        return points[-1][1] if points else None

    def at_best(self, metric: str) -> float | None:
        """``metric`` at the validation where ``optimized_metric`` was best (``optimized_mode``):
        what the best checkpoint holds. None when no validation logged both."""
        target, sign = self.optimized_metric, 1.0 if self.optimized_mode == "min" else -1.0
        candidates = [
            record
            for record in self.records
            if record["stage"] == "val"
            and metric in record
            and target in record
            and not math.isnan(record[target])
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda record: sign * record[target])[metric]


def check_metric(runs: Sequence[Run], metric: str) -> None:
    """Raise a one-sentence error when no run logged ``metric``."""
    logged = sorted(set().union(*(run.metric_names() for run in runs)))
    if metric not in logged:
        listed = ", ".join(logged) or "nothing yet"
        raise ConfigError(f"No run logged {metric!r}; the runs logged: {listed}.")


def find_runs(arguments: Iterable[str]) -> list[Run]:
    """The runs that ``arguments`` name, in the order given: each argument is a run folder (it
    holds ``config_resolved.yaml``), a folder of runs (a sweep folder, ``logs/train/runs``) or a
    glob of either. Each run's name is its path relative to the folder the runs share."""
    folders: list[Path] = []
    for argument in arguments:
        for path in _expand(argument):
            for folder in _run_folders(path):
                if folder not in folders:
                    folders.append(folder)
    common = _common_parent(folders)
    return [load_run(folder, _name(folder, common)) for folder in folders]


def runs_folder(runs: Sequence[Run]) -> Path:
    """The folder the runs share: a sweep's folder for its jobs."""
    common = _common_parent([run.path for run in runs])
    assert common is not None, "runs_folder of no runs"
    return common


def load_run(folder: Path, name: str | None = None) -> Run:
    """Read the run in ``folder`` (see :class:`Run`)."""
    folder = Path(folder).resolve()
    config = flatten(read_config(folder))
    own_folders = (str(config.get("paths.output_dir") or folder), str(folder))
    return Run(
        path=folder,
        name=name or folder.name,
        config={key: _without_own_folder(v, own_folders) for key, v in config.items()},
        choices=_group_choices(folder),
        records=read_metrics(folder),
        result=read_result(folder),
    )


def _expand(argument: str) -> list[Path]:
    path = Path(argument)
    if path.exists():
        return [path.resolve()]
    matches = sorted(glob.glob(argument))
    if not matches:
        raise MissingFileError(
            f"{argument} does not exist; name a sweep folder, run folders or a glob of them."
        )
    return [Path(match).resolve() for match in matches]


def _run_folders(path: Path) -> list[Path]:
    if (path / CONFIG_FILE).is_file():
        return [path]
    inside = [p for p in path.iterdir() if (p / CONFIG_FILE).is_file()] if path.is_dir() else []
    if not inside:
        raise DataError(
            f"{path} is neither a run folder nor a folder of runs (no {CONFIG_FILE} in it or its "
            "sub-folders); name a sweep folder such as logs/train/multiruns/<sweep>."
        )
    return sorted(inside, key=_job_order)


def _job_order(path: Path) -> tuple[int, int | str]:
    """Numbered job folders by number, then the others by name."""
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def _common_parent(folders: list[Path]) -> Path | None:
    if not folders:
        return None
    parents = [folder.parent for folder in folders]
    common = parents[0]
    while not all(parent.is_relative_to(common) for parent in parents):
        common = common.parent
    return common


def _name(folder: Path, common: Path | None) -> str:
    return str(folder.relative_to(common)) if common else folder.name


def _group_choices(folder: Path) -> dict[str, Any]:
    """The config groups chosen for the run (``model``, ``data``, ``experiment``, ...) from
    Hydra's record of it, ``.hydra/hydra.yaml``; Hydra's own groups (``hydra/...``) left out."""
    hydra_file = folder / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return {}
    hydra = (yaml.safe_load(hydra_file.read_text(encoding="utf-8")) or {}).get("hydra", {})
    choices = hydra.get("runtime", {}).get("choices", {}) or {}
    return {group: choice for group, choice in choices.items() if not group.startswith("hydra/")}


def _without_own_folder(value: Any, own_folders: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for own in own_folders:
            value = value.replace(own, RUN_FOLDER)
    return value
