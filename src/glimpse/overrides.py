"""Checking the command line's overrides before Hydra composes them, so that a misspelt config
choice or Trainer argument fails in one sentence that names the closest real ones.

Hydra's own messages for these (``Could not find 'model/swni'`` followed by its search path,
``Key 'max_step' is not in struct``) say what failed but not what was meant.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Sequence
from pathlib import Path

import lightning as L
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType

from glimpse.errors import ConfigError

#: Trainer arguments that the logger and callbacks groups supply.
SUPPLIED_BY_GROUPS = {"logger": "logger=csv", "callbacks": "callbacks=none"}


def trainer_arguments() -> tuple[str, ...]:
    """The keyword arguments of ``lightning.Trainer.__init__``."""
    return tuple(
        name for name in inspect.signature(L.Trainer.__init__).parameters if name != "self"
    )


def check_overrides(arguments: Sequence[str], config_dir: Path) -> None:
    """Raise :class:`ConfigError` for the first override among the command-line ``arguments``
    that chooses a config that ``config_dir`` does not have (``model=swni``) or sets a Trainer
    argument that does not exist (``trainer.max_step=5``). Flags (``-m``, ``--cfg job``) and
    overrides of anything else are left to Hydra."""
    candidates = [a for a in arguments if "=" in a and not a.startswith("-")]
    if not candidates:
        return
    for override in OverridesParser.create().parse_overrides(candidates):
        group_dir = config_dir / override.key_or_group
        if override.key_or_group.startswith("hydra") or override.type == OverrideType.DEL:
            continue
        if group_dir.is_dir():
            _check_choices(override, group_dir)
        elif override.key_or_group.startswith("trainer.") and override.type == OverrideType.CHANGE:
            _check_trainer_argument(override.key_or_group.split(".")[1])


def _choices(override: Override) -> Iterable[str]:
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    value = override.value()
    return [] if value is None else [str(value)]


def _check_choices(override: Override, group_dir: Path) -> None:
    group = override.key_or_group
    available = sorted(p.stem for p in group_dir.glob("*.yaml"))
    for choice in _choices(override):
        if choice in available or choice == "null":
            continue
        closest = difflib.get_close_matches(choice, available, n=3, cutoff=0.5)
        hint = f" (did you mean {' or '.join(f'{group}={c}' for c in closest)}?)" if closest else ""
        raise ConfigError(
            f"{group}={choice} is not one of the {group} configs{hint}; the choices are: "
            f"{', '.join(available)}."
        )


def _check_trainer_argument(name: str) -> None:
    arguments = trainer_arguments()
    if name in arguments and name not in SUPPLIED_BY_GROUPS or name == "_target_":
        return
    if name in SUPPLIED_BY_GROUPS:
        raise ConfigError(
            f"trainer.{name} is set by the {name} config group, not the trainer; choose it "
            f"with e.g. {SUPPLIED_BY_GROUPS[name]}."
        )
    closest = difflib.get_close_matches(name, arguments, n=1, cutoff=0.5)
    hint = f" (did you mean trainer.{closest[0]}?)" if closest else ""
    raise ConfigError(
        f"trainer.{name} is not an argument of lightning.Trainer{hint}; every argument it "
        "takes is listed in conf/trainer/default.yaml."
    )
