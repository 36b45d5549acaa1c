"""Weights & Biases without prompts: offline when no credentials are configured."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

WANDB_HOST = "api.wandb.ai"


def has_wandb_credentials() -> bool:
    """True when an API key is in ``WANDB_API_KEY`` or in ``~/.netrc`` (where ``wandb login``
    stores it). Never prompts and never touches the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if not netrc_path.is_file():
        return False
    try:
        return netrc.netrc(netrc_path).authenticators(WANDB_HOST) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def wandb_mode() -> str:
    """``WANDB_MODE`` when the user set it, else ``online`` with credentials, ``offline``
    without."""
    return os.environ.get("WANDB_MODE") or ("online" if has_wandb_credentials() else "offline")
