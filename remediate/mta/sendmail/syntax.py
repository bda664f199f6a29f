"""Sendmail configuration syntax: sendmail.mc (m4) and the access map source, read with positions.

sendmail.mc is m4 input, read here the way GNU m4 reads it over Sendmail's cf.m4 (cf/README, "A BRIEF
INTRODUCTION TO M4"; checked with GNU m4 1.4.19 over Debian 12's cf tree):

- quotes are `` ` `` ... ``'`` and nest; quoted text is never expanded;
- ``dnl`` deletes everything through the next newline, unexpanded, quotes included;
- a call is a macro name immediately followed by ``(``; arguments are split at top-level commas, parentheses
  nest outside quotes, an argument's unquoted leading whitespace is dropped, ``dnl`` works inside arguments;
- ``#`` starts a comment only until cf.m4 is included: cfhead.m4 calls ``changecom()``, after which a line
  like ``# FEATURE(`promiscuous_relay')`` IS expanded (m4 prints the open-relay warning). A file that does
  not include cf.m4 is read as ``m4 cf.m4 config.mc`` reads it (cf/README): without comments.

Macro names are m4's builtins and Sendmail's upper-case macros (FEATURE, DAEMON_OPTIONS, MAILER, ...).

The access map source is what ``makemap`` reads (checked with makemap 8.17.1.9): ``KEY<whitespace>VALUE``
lines; an empty line or one starting with ``#`` is skipped; a line starting with whitespace is refused
("syntax error (leading space)") and a key without a value too ("no RHS for LHS"), so neither is an entry.
Keys are folded to lower case; the value is the rest of the line. Keys are tagged (``Connect:``, ``To:``,
``From:``, ...) or untagged; network keys are prefixes: IPv4 by leading octets (``10`` is 10.0.0.0/8,
``192.168`` is 192.168.0.0/16), IPv6 as ``IPv6:`` plus leading groups (``IPv6:2002:c0a8:02c7`` is a /48)
or a full address (cf/README, "ANTI-SPAM CONFIGURATION CONTROL").

Lines end with ``\\n`` or ``\\r\\n``; the last line may have no ending. Nothing here does I/O or raises.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from remediate.mta.lines import PhysicalLine, dominant_eol, split_lines

SPACE = " \t\n\r\f\v"
#: what a disabled m4 line starts with: m4 drops the rest of a `dnl` line unread
DISABLED = "dnl # remediate: "
#: what a disabled access map line starts with (makemap skips `#` lines)
COMMENTED = "# remediate: "
BUILTINS = frozenset({
    "define", "undefine", "pushdef", "popdef", "defn", "include", "sinclude", "ifdef", "ifelse", "divert",
    "undivert", "divnum", "changecom", "changequote", "eval", "errprint", "esyscmd", "syscmd", "sysval",
    "translit", "substr", "index", "len", "incr", "decr", "shift", "indir", "builtin", "m4wrap", "m4exit",
    "format", "regexp", "patsubst", "traceon", "traceoff", "dumpdef", "maketemp", "mkstemp", "lower", "upper"})
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UPPER = re.compile(r"[A-Z][A-Z0-9_]*")
_OCTETS = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){0,3}")
_GROUPS = re.compile(r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6}")
_TAG = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(.+)")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network





def line_starts(lines: Sequence[PhysicalLine]) -> list[int]:
    """The offset of each line, then the text's length."""
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line.body) + len(line.eol))
    return starts


def insert_at(text: str, insertions: Iterable[tuple[int, str]]) -> str:
    """``text`` with each ``(offset, string)`` inserted; strings at one offset keep their given order."""
    ordered = sorted(enumerate(insertions), key=lambda item: (item[1][0], item[0]))
    out, last = [], 0
    for _, (offset, string) in ordered:
        out += [text[last:offset], string]
        last = offset
    return "".join(out) + text[last:]


def cut(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` without the given ``(start, end)`` spans (overlapping spans are merged)."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, last = [], 0
    for start, end in merged:
        out.append(text[last:start])
        last = end
    return "".join(out) + text[last:]


# ---------------------------------------------------------------------------------------------------------
# sendmail.mc

@dataclass(frozen=True, slots=True)
class Piece:
    """Literal text of an argument: the inside of a quoted string (``quoted``) or unquoted text."""

    start: int
    end: int
    text: str
    quoted: bool


@dataclass(frozen=True, slots=True)
class Argument:
    """One macro argument; ``start`` is after its dropped leading whitespace, ``end`` at its ``,`` or ``)``.

    ``opaque`` is True when the argument holds something m4 would expand that is not judged here (a nested
    call such as ``defn(...)``, or an unquoted word that may be a macro).
    """

    start: int
    end: int
    pieces: tuple[Piece, ...]
    opaque: bool

    @property
    def value(self) -> str:
        """The literal text m4 would see once one level of quotes is removed (nested calls left out)."""
        return "".join(piece.text for piece in self.pieces)

    def words(self) -> list[str]:
        """The value split on whitespace and commas (mechanism lists, option letters, feature names)."""
        return self.value.replace(",", " ").split()


NO_ARGUMENT = Argument(0, 0, (), False)


@dataclass(frozen=True, slots=True)
class Macro:
    """A top-level macro call (or a bare upper-case macro word, with ``args`` None) and where it sits.

    ``start``/``end`` are offsets (``end`` just after the ``)``); ``first_line``/``last_line`` are 0-based
    line indexes; ``closed`` is False when the file ends inside the argument list (m4 then fails).
    """

    name: str
    start: int
    end: int
    args: tuple[Argument, ...] | None
    first_line: int
    last_line: int
    closed: bool = True

    @property
    def line(self) -> int:
        """1-based number of the line holding the macro's name."""
        return self.first_line + 1

    def has(self, index: int) -> bool:
        return self.args is not None and index < len(self.args)

    def arg(self, index: int) -> Argument:
        """Argument ``index``; an empty one when the call has no such argument."""
        return self.args[index] if self.args is not None and index < len(self.args) else NO_ARGUMENT

    def literal(self, index: int) -> str | None:
        """The stripped value of argument ``index`` when it is present and literal text; None otherwise."""
        argument = self.arg(index)
        return argument.value.strip(SPACE) if self.has(index) and not argument.opaque else None


def is_macro(name: str) -> bool:
    """True for an m4 builtin or a Sendmail-style upper-case macro name."""
    return name in BUILTINS or _UPPER.fullmatch(name) is not None


class _Reader:
    """One pass of m4's tokenizer over a text, recording top-level calls."""

    def __init__(self, text: str, comments: bool) -> None:
        self.text, self.comments = text, comments
        self.starts = [0] + [match.end() for match in re.finditer("\n", text)]
        self.saw_cf = False

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset) - 1

    def quote_end(self, pos: int) -> int:
        """Index of the ``'`` closing the quote opened at ``pos`` (the text's length when unclosed)."""
        depth = 0
        for index in range(pos, len(self.text)):
            char = self.text[index]
            if char == "`":
                depth += 1
            elif char == "'":
                depth -= 1
                if depth == 0:
                    return index
        return len(self.text)

    def line_end(self, pos: int) -> int:
        newline = self.text.find("\n", pos)
        return len(self.text) if newline < 0 else newline + 1

    def skip_space(self, pos: int) -> int:
        while pos < len(self.text) and self.text[pos] in SPACE:
            pos += 1
        return pos

    def top(self) -> list[Macro]:
        text, pos, macros = self.text, 0, []
        while pos < len(text):
            char = text[pos]
            if char == "`":
                pos = self.quote_end(pos) + 1
            elif char == "#" and self.comments:
                pos = self.line_end(pos)
            elif (word := _WORD.match(text, pos)) is None:
                pos += 1
            elif word.group() == "dnl":
                pos = self.line_end(word.end())
            elif not is_macro(word.group()):
                pos = word.end()
            else:
                macro = self.call(word.group(), pos, word.end())
                if macro.args is not None or _UPPER.fullmatch(macro.name):
                    macros.append(macro)
                self.after(macro)
                pos = macro.end
        return macros

    def after(self, macro: Macro) -> None:
        """Follow what changes the reading: changecom(), and the include of cf.m4 (which calls it)."""
        target = macro.literal(0) or ""
        if macro.name == "changecom" or (macro.name in ("include", "sinclude") and target.endswith("cf.m4")):
            self.comments = False
            self.saw_cf = self.saw_cf or macro.name != "changecom"

    def call(self, name: str, start: int, pos: int) -> Macro:
        text = self.text
        if pos >= len(text) or text[pos] != "(":
            return Macro(name, start, pos, None, self.line(start), self.line(pos - 1))
        args: list[Argument] = []
        pos += 1
        while True:
            argument = self.argument(pos)
            args.append(argument)
            pos = argument.end
            if pos >= len(text):
                return Macro(name, start, pos, tuple(args), self.line(start), self.line(pos - 1), False)
            if text[pos] == ")":
                return Macro(name, start, pos + 1, tuple(args), self.line(start), self.line(pos))
            pos += 1

    def argument(self, pos: int) -> Argument:
        text, pieces, opaque, depth = self.text, [], False, 0
        pos = start = self.skip_space(pos)
        while pos < len(text):
            char = text[pos]
            word = _WORD.match(text, pos)
            if char == "`":
                close = self.quote_end(pos)
                pieces.append(Piece(pos + 1, close, text[pos + 1:close], True))
                pos = close + 1
            elif char == "#" and self.comments:
                pieces.append(Piece(pos, self.line_end(pos), text[pos:self.line_end(pos)], False))
                pos = self.line_end(pos)
            elif depth == 0 and char in ",)":
                break
            elif word is not None and word.group() == "dnl":
                pos = self.line_end(word.end())
                pos = pos if pieces else self.skip_space(pos)
            elif word is not None and is_macro(word.group()) and text.startswith("(", word.end()):
                pos, opaque = self.call(word.group(), pos, word.end()).end, True
            else:
                end = word.end() if word is not None else pos + 1
                opaque = opaque or (word is not None and is_macro(word.group()))
                depth += {"(": 1, ")": -1}.get(char, 0) if word is None else 0
                pieces.append(Piece(pos, end, text[pos:end], False))
                pos = end
        return Argument(start, pos, _merge(pieces), opaque)


def _merge(pieces: Sequence[Piece]) -> tuple[Piece, ...]:
    """Join adjacent unquoted pieces into one."""
    out: list[Piece] = []
    for piece in pieces:
        if out and not piece.quoted and not out[-1].quoted and out[-1].end == piece.start:
            out[-1] = Piece(out[-1].start, piece.end, out[-1].text + piece.text, False)
        else:
            out.append(piece)
    return tuple(out)


def parse_mc(text: str) -> list[Macro]:
    """Every top-level macro call of a sendmail.mc, in file order (calls inside quotes are text to m4).

    ``#`` comments count only before an include of cf.m4; a file with no such include is read without them.
    """
    reader = _Reader(text, comments=True)
    macros = reader.top()
    if not reader.saw_cf:
        macros = _Reader(text, comments=False).top()
    return macros


def disable(text: str, macros: Iterable[Macro]) -> str:
    """Turn every physical line of each macro into a ``dnl # remediate: `` line.

    A statement sharing a line with the macro is first moved to a line of its own by inserting ``dnl`` and
    a line ending at the boundary (``dnl`` eats that line ending, so m4's output is unchanged).
    """
    lines = split_lines(text)
    starts, fallback = line_starts(lines), dominant_eol(lines)
    breaks: dict[int, str] = {}
    prefixes: set[int] = set()
    for macro in macros:
        first, last = macro.first_line, macro.last_line
        if text[starts[first]:macro.start].strip(SPACE):
            breaks[macro.start] = "dnl" + (lines[first].eol or fallback)
            prefixes.add(macro.start)
        else:
            prefixes.add(starts[first])
        prefixes.update(starts[index] for index in range(first + 1, last + 1))
        rest = text[macro.end:starts[last] + len(lines[last].body)].lstrip(SPACE)
        if rest and not re.match(r"dnl(?![A-Za-z0-9_])", rest):
            breaks[macro.end] = "dnl" + (lines[last].eol or fallback)
    insertions = [(offset, breaks.get(offset, "") + (DISABLED if offset in prefixes else ""))
                  for offset in sorted(set(breaks) | prefixes)]
    return insert_at(text, insertions)


# ---------------------------------------------------------------------------------------------------------
# The access map source

@dataclass(frozen=True, slots=True)
class Entry:
    """One ``KEY VALUE`` line of the access map source.

    ``tag`` is the lower-cased tag without its colon (``connect``, ``to``, ``from``, ...) or ``""`` for an
    untagged key; ``name`` is the key without its tag; ``index`` is the 0-based line index.
    """

    index: int
    key: str
    tag: str
    name: str
    value: str

    @property
    def line(self) -> int:
        return self.index + 1


def parse_access(text: str) -> list[Entry]:
    """Every entry makemap would store, in file order."""
    entries = []
    for index, line in enumerate(split_lines(text)):
        body = line.body
        if not body or body[0] == "#" or body[0] in SPACE:
            continue
        parts = body.split(None, 1)
        if len(parts) < 2 or not parts[1].strip(SPACE):
            continue
        key, value = parts[0], parts[1].strip(SPACE)
        tagged = _TAG.fullmatch(key)
        if tagged is not None and tagged.group(1).lower() != "ipv6":
            entries.append(Entry(index, key, tagged.group(1).lower(), tagged.group(2), value))
        else:
            entries.append(Entry(index, key, "", key, value))
    return entries


def key_network(name: str) -> tuple[bool, Network | None]:
    """Whether an access key (without its tag) names addresses, and the network it covers.

    ``(False, None)``: a host or domain name (or a number no address can start with, such as ``300``);
    ``(True, network)``: leading IPv4 octets, ``IPv6:`` groups or address, ``[a.b.c.d]`` or ``[IPv6:...]``
    (a client without a PTR record is named by its bracketed address); ``(True, None)``: address-like but
    unreadable.
    """
    try:
        if _OCTETS.fullmatch(name):
            octets = [int(part) for part in name.split(".")]
            if max(octets) > 255:
                return False, None
            padded = octets + [0] * (4 - len(octets))
            return True, ipaddress.IPv4Network((".".join(map(str, padded)), 8 * len(octets)))
        if name.startswith("[") and name.endswith("]"):
            inner = name[1:-1]
            if inner[:5].lower() == "ipv6:":
                return True, ipaddress.IPv6Network(inner[5:])
            return True, ipaddress.IPv4Network(inner)
        if name[:5].lower() == "ipv6:":
            rest = name[5:]
            if "::" in rest or rest.count(":") == 7:
                return True, ipaddress.IPv6Network(rest)
            if _GROUPS.fullmatch(rest):
                groups = rest.split(":")
                address = ":".join(groups + ["0"] * (8 - len(groups)))
                return True, ipaddress.IPv6Network((address, 16 * len(groups)))
            return True, None
    except ValueError:
        return True, None
    return False, None


def comment_out(text: str, indexes: Iterable[int]) -> str:
    """Prefix the given 0-based lines with ``# remediate: ``; every other byte stays."""
    starts = line_starts(split_lines(text))
    return insert_at(text, [(starts[index], COMMENTED) for index in sorted(set(indexes))])
