"""Physical lines of a configuration file, kept byte for byte: what every driver's syntax module builds on.

`split_lines` cuts on ``\\n`` only (``\\r\\n`` stays one ending; a last line may have none), so that
``join_lines(split_lines(text), text) == text``; `dominant_eol` is the ending a new line should get.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

WHITESPACE = " \t\r\n\f\v"
_LINE = re.compile(r"[^\n]*\n|[^\n]+")


@dataclass(frozen=True, slots=True)
class PhysicalLine:
    """One line of a file: its text without the line ending, and that ending (``\\r\\n``, ``\\n``, ``""``)."""

    body: str
    eol: str


def split_lines(text: str) -> list[PhysicalLine]:
    """Split on ``\\n`` only; ``"".join(body + eol)`` gives ``text`` back exactly."""
    lines = []
    for match in _LINE.finditer(text):
        raw = match.group()
        eol = "\r\n" if raw.endswith("\r\n") else "\n" if raw.endswith("\n") else ""
        lines.append(PhysicalLine(raw[:len(raw) - len(eol)], eol))
    return lines


def dominant_eol(lines: Sequence[PhysicalLine]) -> str:
    """The file's line ending: ``\\r\\n`` when most lines use it, otherwise ``\\n``."""
    crlf = sum(1 for line in lines if line.eol == "\r\n")
    return "\r\n" if crlf > sum(1 for line in lines if line.eol == "\n") else "\n"


def join_lines(lines: Iterable[PhysicalLine], original: str) -> str:
    """Join lines; only line endings are adjusted, never a line's text.

    When ``original`` had no final line ending, the result has none either: the last line's ending is dropped
    (when the unterminated last line was deleted, the line that became last loses its ending; a blank one
    then vanishes). A line that lacks an ending but is no longer last (a line was added after the file's
    unterminated last line) gets one (`completing_eol`), so two lines never run together; a ``\\r`` that ends
    a line's text stays."""
    lines = list(lines)
    eol = dominant_eol(lines)
    for index, line in enumerate(lines[:-1]):
        if not line.eol:
            lines[index] = PhysicalLine(line.body, completing_eol(line.body, eol))
    if lines and lines[-1].eol and original and not original.endswith("\n"):
        lines[-1] = PhysicalLine(lines[-1].body, "")
    return "".join(line.body + line.eol for line in lines)


def completing_eol(text: str, eol: str) -> str:
    """The ending to put after unterminated `text` in a file whose line ending is `eol`: only the LF when
    `text` already ends in the CR of a CRLF file (its final LF was lost), so the CR is kept and no CR doubled."""
    return "\n" if eol == "\r\n" and text.endswith("\r") else eol
