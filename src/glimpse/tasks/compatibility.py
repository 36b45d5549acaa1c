"""The task/data pairing check: before anything trains, that a task accepts what a datamodule
yields (its ``ACCEPTS`` against the datamodule's ``KIND``)."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import get_class
from omegaconf import OmegaConf

from glimpse.errors import ConfigError


class IncompatibleConfigError(ConfigError):
    """The chosen model (task) cannot train on the chosen data."""


def data_configs_by_kind(config_dir: Path) -> dict[str, list[str]]:
    """``{batch kind: [data config names]}`` from the ``_target_`` of each ``data/*.yaml``."""
    kinds: dict[str, list[str]] = {}
    for path in sorted((Path(config_dir) / "data").glob("*.yaml")):
        target = OmegaConf.load(path).get("_target_")
        if target is None:
            continue
        kind = getattr(get_class(target), "KIND", None)
        if kind is not None:
            kinds.setdefault(kind, []).append(path.stem)
    return kinds


def check_compatible(task_target: str, data_target: str, config_dir: Path, names: tuple[str, str]):
    """Raise :class:`IncompatibleConfigError` with one sentence naming the data configs that
    fit, when the task at ``task_target`` does not accept the datamodule's ``KIND``.

    ``names`` is ``(model config name, data config name)`` as chosen on the command line.
    """
    task_cls, data_cls = get_class(task_target), get_class(data_target)
    accepted = getattr(task_cls, "ACCEPTS", frozenset())
    kind = getattr(data_cls, "KIND", None)
    if kind in accepted:
        return
    by_kind = data_configs_by_kind(config_dir)
    fitting = sorted(name for k in accepted for name in by_kind.get(k, []))
    model_name, data_name = names
    raise IncompatibleConfigError(
        f"model={model_name} ({task_cls.__name__}) trains on {', '.join(sorted(accepted))} "
        f"batches but data={data_name} yields {kind} batches; use one of: "
        f"{', '.join('data=' + n for n in fitting) or '(no shipped data config fits)'}."
    )
