"""Garbled configuration files for the property tests of every driver's transforms (issue #11): physical lines
of bytes (CRLF, LF, a lone CR, tabs, bytes that are not UTF-8, very long lines, no final newline), and the
byte-level comparisons that say what a transform kept. Independent of the code under test: lines are cut on
``\\n`` here with a regular expression, never with `remediate.mta.lines`."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

LINE = re.compile(rb"[^\n]*\n|[^\n]+")
#: bytes that are no UTF-8 (a lone continuation byte, a truncated sequence, an encoded surrogate, Latin-1)
NOT_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xe9", b"caf\xe9", b"\xed\xa0\x80", b"\xf0\x9f\x92"]
NASTY = [b"\r", b"\t", b"\f", b"\v", b"\xc2\xa0", b"\xc2\x85", b"\xe2\x80\xa8", b"\\", b"#", b"=", b"$", b"{", b"}",
         b"caf\xc3\xa9"] + NOT_UTF8


def physical(data: bytes) -> list[bytes]:
    """The physical lines of `data`, each with its ending (``\\n``, ``\\r\\n`` or none for the last)."""
    return LINE.findall(data)


def ending(line: bytes) -> bytes:
    return b"\r\n" if line.endswith(b"\r\n") else b"\n" if line.endswith(b"\n") else b""


def junk() -> st.SearchStrategy[bytes]:
    """A fragment of a garbled line: random bytes (no newline, no NUL), or one of the nasty ones."""
    return st.one_of(st.binary(max_size=24).map(lambda b: b.replace(b"\n", b" ").replace(b"\x00", b"")),
                     st.sampled_from(NASTY))


@st.composite
def files(draw: Callable[..., Any], line: st.SearchStrategy[bytes], max_lines: int = 14) -> bytes:
    """A file of lines drawn from `line`, ended all LF, all CRLF or mixed (a CR alone now and then), the last
    line with or without its ending; now and then a very long line (up to 64 KiB)."""
    mode = draw(st.sampled_from(["lf", "crlf", "mixed"]))
    out = []
    for _ in range(draw(st.integers(0, max_lines))):
        body = draw(line)
        if draw(st.integers(0, 30)) == 0:
            body += b" " + draw(st.sampled_from([b"x", b"\xff", b"10.0.0.0/8,"])) * draw(st.integers(1000, 30000))
        eol = {"lf": b"\n", "crlf": b"\r\n"}.get(mode) or draw(st.sampled_from([b"\n", b"\r\n", b"\r\n", b"\r\r\n"]))
        out.append(body + eol)
    data = b"".join(out)
    if data and draw(st.booleans()):
        data = data.removesuffix(b"\n")   # no final newline (a CRLF file may be left ending in a lone CR)
    return data


def all_crlf(data: bytes) -> bool:
    """Every line but an unterminated last one ends in CRLF (and there is one at least)."""
    ended = [line for line in physical(data) if line.endswith(b"\n")]
    return bool(ended) and all(line.endswith(b"\r\n") for line in ended)


def kept_in_order(before: Sequence[bytes], after: Sequence[bytes], file_ended: bool) -> bool:
    """`after` is `before` byte for byte, except, when the file had no final newline, for the last line: it
    may have lost its ending (it became last when the unterminated line after it went; a blank one then
    vanishes) or gained one (a line was added after it)."""
    before, after = list(before), list(after)
    if file_ended:
        return before == after
    if len(before) == len(after) + 1 and not before[-1].strip(b"\r\n"):
        before.pop()
    return len(before) == len(after) and before[:-1] == after[:-1] and \
        [line.rstrip(b"\r\n") for line in before[-1:]] == [line.rstrip(b"\r\n") for line in after[-1:]]


def escaped(data: bytes) -> str:
    """`data` for an assertion message: readable, every byte visible."""
    return data.decode("utf-8", "backslashreplace")[:2000]
