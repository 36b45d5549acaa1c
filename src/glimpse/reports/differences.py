"""Which config values tell a set of runs apart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from glimpse.reports.runs import Run
from glimpse.run_folder import LAUNCH_KEYS

#: What a table shows for a key the run does not have.
ABSENT = "-"


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """The config-group choices (``model``, ``data``) and config values
    (``model.optimizer.lr``) that differ between ``runs``, groups first, each in the order the
    runs' configs list them.

    A config value is left out when the differing group choices already explain it: when every
    two runs with the same choices have the same value (``model.net.cell`` follows from
    ``model``, but ``model.optimizer.lr`` swept within each model does not).
    """
    groups = [key for key in _union(run.choices for run in runs) if _differs(runs, key)]
    values = [
        key
        for key in _union(run.config for run in runs)
        if key not in LAUNCH_KEYS and _differs(runs, key) and not _explained(runs, key, groups)
    ]
    return groups + values


def display_value(run: Run, key: str) -> Any:
    """``run``'s value of ``key`` (a group choice or a config value), :data:`ABSENT` if none."""
    try:
        return run.value(key)
    except KeyError:
        return ABSENT


def _union(mappings) -> list[str]:
    keys: dict[str, None] = {}
    for mapping in mappings:
        keys.update(dict.fromkeys(mapping))
    return list(keys)


def _comparable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _differs(runs: Sequence[Run], key: str) -> bool:
    return len({_comparable(display_value(run, key)) for run in runs}) > 1


def _explained(runs: Sequence[Run], key: str, groups: list[str]) -> bool:
    if not groups:
        return False
    seen: dict[str, str] = {}
    for run in runs:
        choices = _comparable([display_value(run, group) for group in groups])
        value = _comparable(display_value(run, key))
        if seen.setdefault(choices, value) != value:
            return False
    return True
