"""Which code produced a run: the package version and, in a git checkout, the commit."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import glimpse


@functools.cache
def code_version() -> str:
    """``"<version>+g<commit>[.dirty]"`` in a git checkout, else the package version."""
    root = Path(glimpse.__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return glimpse.__version__
    return f"{glimpse.__version__}+g{commit}{'.dirty' if dirty else ''}"
