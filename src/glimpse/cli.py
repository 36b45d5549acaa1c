"""Hydra entry points behind train.py, eval.py and the glimpse-train / glimpse-eval commands.

The config directory is ``conf/`` beside train.py (a checkout), or the one named by the
``GLIMPSE_CONFIG_DIR`` environment variable.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from glimpse.utils.run_dir import register_resolvers

CONFIG_DIR = os.environ.get("GLIMPSE_CONFIG_DIR", str(Path(__file__).resolve().parents[2] / "conf"))

register_resolvers()
# Lightning 2.6 calls a torch.utils._pytree check that torch 2.14 deprecates; nothing to act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def _exit_on_user_error(error: Exception) -> None:
    """Print a configuration or input error as one sentence and exit with status 1."""
    from glimpse.utils.console import console

    console.print(f"[bold red]error:[/bold red] {error}", highlight=False)
    sys.exit(1)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _train(cfg: DictConfig) -> float | None:
    from glimpse.run import USER_ERRORS, train
    from glimpse.utils.console import route_library_logs_to_root

    route_library_logs_to_root()
    try:
        return train(cfg)
    except USER_ERRORS as error:
        _exit_on_user_error(error)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def _eval(cfg: DictConfig) -> None:
    from glimpse.run import USER_ERRORS, evaluate
    from glimpse.utils.console import route_library_logs_to_root

    route_library_logs_to_root()
    try:
        evaluate(cfg)
    except USER_ERRORS as error:
        _exit_on_user_error(error)


def _check_command_line() -> None:
    """Fail in one sentence on a misspelt config choice or Trainer argument (before Hydra)."""
    from glimpse.errors import GlimpseError
    from glimpse.overrides import check_overrides

    try:
        check_overrides(sys.argv[1:], Path(CONFIG_DIR))
    except GlimpseError as error:
        _exit_on_user_error(error)


def train_main() -> None:
    _check_command_line()
    _train()


def eval_main() -> None:
    _check_command_line()
    _eval()
