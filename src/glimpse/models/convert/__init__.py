"""Key-mapping converters from other libraries' checkpoints to glimpse models."""

from __future__ import annotations

import re
from collections.abc import Sequence

KeyMap = Sequence[tuple[re.Pattern[str], str]]


def rename_key(key: str, key_map: KeyMap) -> str | None:
    """The first ``(pattern, target)`` of ``key_map`` whose pattern matches all of ``key``,
    expanded with its groups (``re.Match.expand``); None when no pattern matches."""
    for pattern, target in key_map:
        match = pattern.fullmatch(key)
        if match:
            return match.expand(target)
    return None
