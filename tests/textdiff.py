"""Line-level comparison the transform tests share: which physical lines a transform removed and added."""

from __future__ import annotations

import difflib
import re


def lines(text: str) -> list[str]:
    """Physical lines with their endings (``\\n`` or ``\\r\\n``; the last may have none)."""
    return re.findall(r"[^\n]*\n|[^\n]+", text)


def diff(before: str, after: str) -> tuple[list[str], list[str]]:
    """(lines removed from `before`, lines added in `after`), line endings included."""
    a, b = lines(before), lines(after)
    removed: list[str] = []
    added: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            removed += a[i1:i2]
            added += b[j1:j2]
    return removed, added
