"""The files a run folder holds, and how the ones glimpse writes for itself are read back.

    <run>/config_resolved.yaml    the resolved config, written before training starts
    <run>/metrics.jsonl           one JSON object per logged train step, validation, train
                                  epoch and test (written by callbacks.metrics_file.MetricsFile)
    <run>/result.json             written when ``train()`` returns: the run finished, and the
                                  value it returned to the sweeper
    <run>/checkpoints/last.ckpt   the latest validation's state, to resume from

``python compare.py`` reads them to line runs up; ``resume_sweep=`` reads them to tell finished,
half-done and never-started jobs apart.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from glimpse.errors import DataError

log = logging.getLogger(__name__)

CONFIG_FILE = "config_resolved.yaml"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"

#: The keys of a metrics.jsonl record that are not metric values.
RECORD_KEYS = ("stage", "step", "epoch")

#: Config keys that say how a run was started, not what it trains.
LAUNCH_KEYS = frozenset({"ckpt_path", "resume_sweep"})


@dataclass(frozen=True)
class RunResult:
    """What a finished run returned: ``value`` of ``optimized_metric`` (None when it was not
    logged) and every final metric."""

    optimized_metric: str
    value: float | None
    metrics: dict[str, float]


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config (``config_resolved.yaml``) as plain containers."""
    config = OmegaConf.to_container(OmegaConf.load(Path(run_dir) / CONFIG_FILE), resolve=False)
    return config if isinstance(config, dict) else {}


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested config by its dotted key (``model.optimizer.lr``); lists and empty
    mappings are leaves."""
    if not isinstance(config, dict) or (not config and prefix):
        return {prefix.removesuffix("."): config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` in the order written; [] when it has none.

    A last line cut short (the process was killed while writing it) is left out with a warning;
    a malformed line anywhere else is an error naming the file and the line.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                log.warning("%s: line %d was cut short and is left out.", path, number)
                continue
            raise DataError(
                f"{path} line {number} is not a JSON object ({error.msg}); delete the line or "
                "the file to go on."
            ) from error
    return records


def write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``run_dir/metrics.jsonl`` with ``records``, atomically."""
    text = "".join(json.dumps(record) + "\n" for record in records)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    _write_atomically(Path(run_dir) / METRICS_FILE, text)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one record to ``run_dir/metrics.jsonl``, written through to disk."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(run_dir) / METRICS_FILE, "a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()


def write_result(run_dir: Path, optimized_metric: str, value: float | None, metrics: dict) -> None:
    """Mark ``run_dir`` finished: write what ``train()`` returns, atomically (a run killed while
    writing it is not taken for finished)."""
    result = {
        "optimized_metric": optimized_metric,
        "value": value,
        "metrics": {name: float(v) for name, v in sorted(metrics.items())},
    }
    _write_atomically(Path(run_dir) / RESULT_FILE, json.dumps(result, indent=2) + "\n")


def read_result(run_dir: Path) -> RunResult | None:
    """What the run in ``run_dir`` returned, or None when it has not finished."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        return RunResult(result["optimized_metric"], result["value"], result["metrics"])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(
            f"{path} is not a glimpse result file ({error}); delete it to train that run again."
        ) from error


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
