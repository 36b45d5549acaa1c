"""Which code produced a run: the package version and, in a git checkout, the commit."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import glimpse

ROOT = Path(glimpse.__file__).resolve().parents[2]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=5
    ).stdout.strip()


@functools.cache
def code_version() -> str:
    """``"<version>+g<commit>[.dirty]"`` in a git checkout, else the package version."""
    try:
        commit = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return glimpse.__version__
    return f"{glimpse.__version__}+g{commit}{'.dirty' if dirty else ''}"
