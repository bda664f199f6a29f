"""Exim configuration syntax (Exim 4.96, Debian 12 packaging) read with positions, and edits that keep other bytes.

Two inputs:

- ``update-exim4.conf.conf``, a shell fragment update-exim4.conf(8) sources: ``name='value'`` lines (single
  quotes as Debian writes them; double quotes or none when hand-edited) and ``#`` comments; the last
  assignment of a name wins.
- Exim configuration text (the Exim specification, chapter 6): the Debian template, one conf.d file or a
  hand-written exim4.conf. Blank lines and lines whose first non-blank character is ``#`` are comments; a line
  ending in ``\\`` continues on the next line, leading white space dropped, and comment lines may sit inside
  such a sequence (6.2); ``.ifdef`` ... ``.endif`` and ``.include`` are directives (6.3, 6.10); ``Name =
  value`` with an upper-case initial defines a macro (6.4); ``begin SECTION`` starts a section;
  ``hostlist|domainlist|addresslist|localpartlist NAME = list`` defines a named list (10.6); ``name:`` starts
  an ACL (44.17) or a driver instance of ``[hide] option [= value]`` lines (6.23). An ACL statement is a verb,
  then one condition or modifier per logical line, the first one on the verb's line (44.17-18). In a text
  without ``begin`` (a conf.d fragment) a ``name:`` block is an ACL when its first line starts with a verb.

Lists (6.20-6.22, 10.2): ``:`` separates items and a doubled separator is one literal character (``::::1`` is
``::1``); ``<`` plus a punctuation character at the start changes the separator; white space around items is
dropped; a trailing empty item is ignored; ``!`` negates an item, and a list whose last item is negative
matches everything else. Conditional directives are not evaluated: every branch is read. No I/O here.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from remediate.mta.lines import WHITESPACE, PhysicalLine, join_lines, split_lines

VERBS = frozenset({"accept", "defer", "deny", "discard", "drop", "require", "warn"})
BLOCK_SECTIONS = frozenset({"acl", "routers", "transports", "authenticators", "unknown"})
MACRO_NAME = re.compile(r"[A-Z][A-Za-z0-9_]*")
_DIRECTIVE = re.compile(r"\.(ifdef|ifndef|elifdef|elifndef|else|endif|include|include_if_exists)\b")
_BEGIN = re.compile(r"begin\s+(\w+)")
_MACRO = re.compile(r"([A-Z][A-Za-z0-9_]*)\s*==?\s*(.*)", re.DOTALL)
_NAMED_LIST = re.compile(r"(hostlist|domainlist|addresslist|localpartlist)\s+(\w+)\s*=\s*")
_HEADER = re.compile(r"([A-Za-z_][\w-]*)\s*:")
_MAIN_OPTION = re.compile(r"([a-z_]\w*)\s*=\s*(.*)", re.DOTALL)
_SETTING = re.compile(r"(!?)\s*(?:hide\s+)?([A-Za-z_]\w*)")
_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?([A-Za-z_]\w*)=")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network



@dataclass(frozen=True, slots=True)
class Logical:
    """One logical line: ``text`` (continuations joined, outer white space dropped) and ``segments``, the
    ``(line index, start column, end column)`` of each physical piece of it, in order."""

    text: str
    segments: tuple[tuple[int, int, int], ...]

    @property
    def first(self) -> int:
        return self.segments[0][0]

    @property
    def last(self) -> int:
        return self.segments[-1][0]

    @property
    def line(self) -> int:
        """1-based number of the line that starts it."""
        return self.first + 1

    def position(self, offset: int) -> tuple[int, int]:
        """(line index, column) of character ``offset`` of ``text``; the end of the last piece past it."""
        consumed = 0
        for index, start, end in self.segments:
            if offset < consumed + end - start:
                return index, start + offset - consumed
            consumed += end - start
        return self.segments[-1][0], self.segments[-1][2]


@dataclass(frozen=True, slots=True)
class Setting:
    """An ACL condition or modifier (``[!]name [= value]``) or a driver option (``[hide] name [= value]``);
    ``value`` is the raw text from ``value_offset`` in ``logical.text`` on (None without ``=``)."""

    name: str
    negated: bool
    value: str | None
    logical: Logical
    value_offset: int


@dataclass(frozen=True, slots=True)
class Statement:
    """An ACL statement: its verb, then its conditions and modifiers in order (the verb's line first)."""

    verb: str
    conditions: tuple[Setting, ...]
    logicals: tuple[Logical, ...]

    @property
    def first(self) -> int:
        return self.logicals[0].first

    @property
    def last(self) -> int:
        return self.logicals[-1].last


@dataclass(frozen=True, slots=True)
class Acl:
    """An ACL: ``name:`` and its statements."""

    name: str
    header: Logical
    statements: tuple[Statement, ...]


@dataclass(frozen=True, slots=True)
class Driver:
    """A router, transport or authenticator instance; ``section`` is where it was found (or ``unknown``)."""

    name: str
    section: str
    header: Logical
    options: tuple[Setting, ...]

    def value(self, name: str) -> str | None:
        """The value of option ``name`` as Exim reads it (6.17: double quotes and backslash escapes
        resolved), from its last setting (Exim refuses a repeated one anyway); None when unset."""
        values = [option.value for option in self.options if option.name == name]
        value = values[-1] if values else None
        if value is None or not value.startswith('"'):
            return value
        body = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
        return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), body)


@dataclass(frozen=True, slots=True)
class NamedList:
    """``kind name = value`` (10.6); ``value_offset`` is where the value starts in ``logical.text``."""

    kind: str
    name: str
    value: str
    logical: Logical
    value_offset: int


@dataclass(frozen=True, slots=True)
class Config:
    """Exim configuration text, parsed. ``depth``: the ``.if*`` nesting before each physical line;
    ``macros`` and ``settings`` (main options outside any block) keep their last values; ``fragment``: the
    text has no ``begin`` line (a conf.d file)."""

    lines: tuple[PhysicalLine, ...]
    acls: tuple[Acl, ...]
    drivers: tuple[Driver, ...]
    lists: tuple[NamedList, ...]
    macros: Mapping[str, str]
    settings: Mapping[str, str]
    depth: tuple[int, ...]
    fragment: bool

    def named(self, kind: str) -> dict[str, str]:
        """Every named list of ``kind`` (``hostlist``...) by name, the last definition winning."""
        return {named.name: named.value for named in self.lists if named.kind == kind}







def read_logical(lines: Sequence[PhysicalLine], index: int) -> tuple[Logical, int]:
    """The logical line starting at line ``index`` and the index of the line after it. Comment and
    directive lines inside a continuation are skipped; a blank line ends it."""
    segments: list[tuple[int, int, int]] = []
    position = index
    while position < len(lines):
        body = lines[position].body
        stripped = body.strip(WHITESPACE)
        if position > index and not stripped:
            break
        position += 1
        if position - 1 > index and (stripped.startswith("#") or _DIRECTIVE.match(stripped)):
            continue
        start, end = len(body) - len(body.lstrip(WHITESPACE)), len(body.rstrip(WHITESPACE))
        continued = body[:end].endswith("\\")
        segments.append((position - 1, start, end - continued))
        if not continued:
            break
    return Logical("".join(lines[n].body[start:end] for n, start, end in segments), tuple(segments)), position


def _depths(lines: Sequence[PhysicalLine]) -> tuple[int, ...]:
    depths, current = [], 0
    for line in lines:
        depths.append(current)
        match = _DIRECTIVE.match(line.body.strip(WHITESPACE))
        current += 1 if match and match.group(1) in ("ifdef", "ifndef") else 0
        current = max(0, current - 1) if match and match.group(1) == "endif" else current
    return tuple(depths)


def _setting(logical: Logical, offset: int = 0) -> Setting:
    text = logical.text
    match = _SETTING.match(text, offset)
    if match is None:
        return Setting("", False, None, logical, len(text))
    equals = text.find("=", match.end())
    start = len(text) - len(text[equals + 1:].lstrip(WHITESPACE)) if equals >= 0 else len(text)
    return Setting(match.group(2), bool(match.group(1)), text[start:] if equals >= 0 else None, logical, start)


def _statements(body: Sequence[Logical]) -> tuple[Statement, ...]:
    statements: list[Statement] = []
    for logical in body:
        word = (logical.text.split(None, 1) or [""])[0]
        if word in VERBS:
            rest = len(logical.text) - len(logical.text[len(word):].lstrip(WHITESPACE))
            first = (_setting(logical, rest),) if rest < len(logical.text) else ()
            statements.append(Statement(word, first, (logical,)))
        elif statements:
            last = statements[-1]
            statements[-1] = Statement(last.verb, (*last.conditions, _setting(logical)), (*last.logicals, logical))
    return tuple(statements)


@dataclass
class _Reader:
    """Collects the parts of a configuration text while its logical lines are read in order."""

    section: str
    acls: list[Acl] = field(default_factory=list)
    drivers: list[Driver] = field(default_factory=list)
    lists: list[NamedList] = field(default_factory=list)
    macros: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    block: tuple[str, Logical] | None = None
    body: list[Logical] = field(default_factory=list)

    def close(self) -> None:
        if self.block is not None:
            name, header = self.block
            first = (self.body[0].text.split(None, 1) or [""])[0] if self.body else ""
            if self.section == "acl" or (self.section == "unknown" and first in VERBS):
                self.acls.append(Acl(name, header, _statements(self.body)))
            else:
                self.drivers.append(Driver(name, self.section, header, tuple(_setting(b) for b in self.body)))
        self.block, self.body = None, []

    def take(self, logical: Logical) -> None:
        text = logical.text
        begin, macro, header = _BEGIN.fullmatch(text), _MACRO.fullmatch(text), _HEADER.fullmatch(text)
        named = _NAMED_LIST.match(text) if self.section in ("main", "unknown") else None
        if _DIRECTIVE.match(text):
            return
        if begin or macro or named or (header and self.section in BLOCK_SECTIONS):
            self.close()
        if begin:
            self.section = begin.group(1).lower()
        elif macro:
            self.macros[macro.group(1)] = macro.group(2)
        elif named:
            self.lists.append(NamedList(named.group(1), named.group(2), text[named.end():], logical, named.end()))
        elif header and self.section in BLOCK_SECTIONS:
            self.block = (header.group(1), logical)
        elif self.block is not None:
            self.body.append(logical)
        elif (option := _MAIN_OPTION.fullmatch(text)) and self.section in ("main", "unknown"):
            self.settings[option.group(1)] = option.group(2)


def parse_config(text: str) -> Config:
    """Read Exim configuration text (the rules are in the module docstring)."""
    lines = split_lines(text)
    has_begin = any(_BEGIN.fullmatch(line.body.strip(WHITESPACE)) for line in lines)
    reader = _Reader("main" if has_begin else "unknown")
    index = 0
    while index < len(lines):
        stripped = lines[index].body.strip(WHITESPACE)
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        logical, index = read_logical(lines, index)
        reader.take(logical)
    reader.close()
    return Config(tuple(lines), tuple(reader.acls), tuple(reader.drivers), tuple(reader.lists),
                  dict(reader.macros), dict(reader.settings), _depths(lines), not has_begin)


# ---------------------------------------------------------------------------------------------------------
# Lists

@dataclass(frozen=True, slots=True)
class ListItem:
    """A list item: its text (separators undoubled, outer white space and a leading ``!`` removed) and the
    ``start``/``end`` of the raw item in the list string."""

    text: str
    negated: bool
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ExList:
    source: str
    separator: str
    items: tuple[ListItem, ...]


def split_list(value: str, separator: str = ":") -> ExList:
    """Split an Exim list (spec 6.20-6.22); ``separator`` is the one used when the list does not name one."""
    size, position = len(value), len(value) - len(value.lstrip(WHITESPACE))
    if value[position:position + 1] == "<" and value[position + 1:position + 2] in tuple(string.punctuation):
        separator, position = value[position + 1], position + 2
    items: list[ListItem] = []
    while True:
        while position < size and value[position] in WHITESPACE:
            position += 1
        if position >= size:
            return ExList(value, separator, tuple(items))
        start, chars = position, []
        while position < size and (value[position] != separator or value[position + 1:position + 2] == separator):
            position += 2 if value[position] == separator else 1
            chars.append(value[position - 1])
        text = "".join(chars).strip(WHITESPACE)
        negated = text.startswith("!")
        items.append(ListItem(text[1:].lstrip(WHITESPACE) if negated else text, negated, start,
                              start + len(value[start:position].rstrip(WHITESPACE))))
        position += 1


def debian_list(value: str) -> ExList:
    """A ``dc_*`` list as update-exim4.conf reads it: a ``;`` anywhere makes ``;`` the separator unless the
    value names one itself (update-exim4.conf(8), "CONFIGURATION VARIABLES")."""
    return split_list(value, ";" if ";" in value else ":")


def debian_without(items: ExList, drop: Iterable[int]) -> str:
    """:func:`without` for a ``dc_*`` list: a ``;`` list whose last ``;`` goes gets ``<;``, or update-exim4.conf
    would read it as a ``:`` list and split an IPv6 address (update-exim4.conf(8), "CONFIGURATION VARIABLES")."""
    value = without(items, drop)
    return f"<; {value}" if items.separator == ";" and ";" not in value and ":" in value else value


def without(items: ExList, drop: Iterable[int]) -> str:
    """The list text with the items at the indexes ``drop`` removed, each with one separator; every other
    byte stays. Nothing is left when every item goes."""
    dropped = set(drop)
    kept = [index for index in range(len(items.items)) if index not in dropped]
    if not kept:
        return ""
    source, parts = items.source, items.items
    out = [source[:parts[0].start]]
    for place, index in enumerate(kept):
        out.append((source[parts[index - 1].end:parts[index].start] if place else "")
                   + source[parts[index].start:parts[index].end])
    if parts[kept[-1]].end == parts[kept[-1]].start:
        out.append(items.separator)   # an empty last item needs its separator, or Exim ignores it
    return "".join(out) + source[parts[-1].end:]


def parse_network(item: str) -> Network | None:
    """A literal IP address or CIDR network of a host list item (separators already undoubled, spec 10.12);
    IPv4-mapped IPv6 is read as IPv4, as Exim matches it. None for anything else."""
    match = re.fullmatch(r"([0-9A-Fa-f:.]+)(?:/(\d{1,3}))?", item)
    if match is None:
        return None
    address, length = match.group(1), match.group(2)
    try:
        network = ipaddress.ip_network(f"{address}/{length or (128 if ':' in address else 32)}", strict=False)
    except ValueError:
        return None
    mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
    if mapped is not None and network.prefixlen >= 96:
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96), strict=False)
    return network


def exim_list_notation(network: Network) -> str:
    """A network as an item of a ``:``-separated Exim list: IPv6 colons doubled (``::1/128`` is
    ``::::1/128``), as spec 6.20 and update-exim4.conf's own ``: 127.0.0.1 : ::::1`` require."""
    return str(network).replace(":", "::") if network.version == 6 else str(network)


# ---------------------------------------------------------------------------------------------------------
# update-exim4.conf.conf

@dataclass(frozen=True, slots=True)
class Assignment:
    """A ``name=value`` line; ``start``/``end`` delimit the value inside its quotes (``quote``)."""

    name: str
    value: str
    index: int
    start: int
    end: int
    quote: str

    @property
    def line(self) -> int:
        return self.index + 1


def parse_update_conf(text: str) -> dict[str, Assignment]:
    """Every assignment of update-exim4.conf.conf, the last one of each name winning (the file is sourced)."""
    found: dict[str, Assignment] = {}
    for index, line in enumerate(split_lines(text)):
        match = _ASSIGNMENT.match(line.body)   # a comment line never matches
        if match is None:
            continue
        start, quote = match.end(), line.body[match.end():match.end() + 1]
        if quote in ("'", '"'):
            closing = re.compile("'" if quote == "'" else r'(?<!\\)"').search(line.body, start + 1)
            start, end = start + 1, closing.start() if closing else len(line.body)
        else:
            quote, end = "", start + len(re.split(r"[\s;&|]", line.body[start:], maxsplit=1)[0])
        found[match.group(1)] = Assignment(match.group(1), line.body[start:end], index, start, end, quote)
    return found


def set_assignment(text: str, assignment: Assignment, value: str) -> str:
    """Replace the value of ``assignment``, keeping its quotes and the rest of its line; an unquoted value
    that now needs quoting gets single quotes."""
    lines = split_lines(text)
    body = lines[assignment.index].body
    if not assignment.quote and re.search(r"[^\w./:@*!+<,-]", value):
        value = f"'{value}'"
    lines[assignment.index] = PhysicalLine(body[:assignment.start] + value + body[assignment.end:],
                                           lines[assignment.index].eol)
    return join_lines(lines, text)


# ---------------------------------------------------------------------------------------------------------
# Edits of configuration text

def replace_value(lines: list[PhysicalLine], logical: Logical, offset: int, value: str) -> None:
    """Replace ``logical.text[offset:]`` by ``value`` in ``lines`` (in place). Continuation lines after the
    one where ``offset`` falls are deleted; comment lines among them stay. Edit bottom-up."""
    index, column = logical.position(offset)
    last, _, last_end = logical.segments[-1]
    body = lines[index].body
    lines[index] = PhysicalLine(body[:column] + value + (body[last_end:] if index == last else ""), lines[index].eol)
    for number in sorted({n for n, _, _ in logical.segments if n > index}, reverse=True):
        del lines[number]


def insert_lines(lines: list[PhysicalLine], at: int, bodies: Sequence[str], eol: str) -> None:
    """Insert ``bodies`` before line ``at`` (in place), each ending with ``eol``; at the end of a file that
    lacks a final line ending, the last new line lacks it instead."""
    new = [PhysicalLine(body, eol) for body in bodies]
    if at >= len(lines) and lines and not lines[-1].eol:
        lines[-1] = PhysicalLine(lines[-1].body, eol)
        new[-1] = PhysicalLine(new[-1].body, "")
    lines[at:at] = new
