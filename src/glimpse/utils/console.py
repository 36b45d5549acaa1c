"""Rich printing of configs and metrics."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

console = Console(stderr=True)


def print_config_tree(cfg: DictConfig, first: tuple[str, ...] = ("data", "model", "trainer")):
    """Print the resolved config as a tree, one branch per top-level group."""
    tree = Tree("config", guide_style="dim")
    keys = [k for k in first if k in cfg] + [k for k in cfg if k not in first]
    for key in keys:
        value = cfg[key]
        branch = tree.add(f"[bold]{key}[/bold]")
        if isinstance(value, DictConfig):
            text = OmegaConf.to_yaml(value, resolve=True)
        else:
            text = str(value)
        branch.add(Syntax(text, "yaml", theme="ansi_dark", word_wrap=True))
    console.print(tree)


def print_metrics(metrics: Mapping[str, float], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, f"{float(metrics[name]):.4f}")
    console.print(table)


def route_library_logs_to_root() -> None:
    """Let Hydra's handlers (console on stderr, the run's log file) print Lightning's messages
    once: Lightning's package logger brings its own stderr handler, which doubles every line."""
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True
