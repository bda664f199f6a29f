"""Postfix configuration syntax: main.cf and master.cf read with positions, and edits that keep other bytes.

Both files share Postfix's logical-line rules: a logical line starts with a non-blank character in column 0;
a line that starts with whitespace continues the previous logical line; empty, whitespace-only and comment
lines (first non-blank character ``#``) are skipped and do not end a logical line. Lines end with ``\\n`` or
``\\r\\n``; the last line may have no ending. A logical line is the concatenation of its physical lines, so
the ``=`` of a parameter may sit on a continuation line. Only ASCII whitespace separates (a ``\\r`` is
whitespace, so CRLF files read as Postfix reads them); other bytes, including those that are not UTF-8
(carried as surrogate escapes), are ordinary text and kept as they are. A NUL byte inside a setting is
refused (ConfigError): Postfix's C strings end there. Values are parsed here too: lists, restriction lists,
networks. Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

from remediate.errors import ConfigError
from remediate.mta.lines import (
    WHITESPACE,
    PhysicalLine,
    completing_eol,
    dominant_eol,
    join_lines,
    split_lines,
)

#: `name = value` as Postfix splits it (split_nameval): only ASCII whitespace separates
_NAME_VALUE = re.compile(r"([^ \t\r\n\f\v=]+)[ \t\r\n\f\v]*=(.*)", re.DOTALL)
_TAKES_ARGUMENT = re.compile(r"check_(?!relay_domains$)\w+|reject_rbl_client|reject_rhsbl_\w+|"
                             r"permit_dnswl_client|permit_rhswl_client|sleep")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network



@dataclass(frozen=True, slots=True)
class Parameter:
    """One ``name = value`` logical line of main.cf.

    ``value`` joins the stripped pieces of the logical line with single spaces; ``lines`` holds the 0-based
    indexes of its physical lines (the ``name =`` line first, then its continuation lines).
    """

    name: str
    value: str
    lines: tuple[int, ...]

    @property
    def line(self) -> int:
        """1-based number of the line that starts this parameter."""
        return self.lines[0] + 1


@dataclass(frozen=True, slots=True)
class Token:
    """A master.cf word and where it sits: ``spans`` holds ``(line index, start column, end column)``."""

    text: str
    spans: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class Override:
    """A ``-o name=value`` (or ``-o { name = value }``) argument of a master.cf service."""

    name: str
    value: str
    tokens: tuple[Token, ...]

    @property
    def line(self) -> int:
        """1-based number of the line holding the ``-o``."""
        return self.tokens[0].spans[0][0] + 1


@dataclass(frozen=True, slots=True)
class Service:
    """A master.cf service entry (``name type private unpriv chroot wakeup maxproc command args...``)."""

    name: str
    type: str
    command: str
    line: int
    overrides: tuple[Override, ...]

    @property
    def label(self) -> str:
        """The ``name/type`` label ``postconf -P`` uses for this service."""
        return f"{self.name}/{self.type}"

    @property
    def is_smtpd(self) -> bool:
        """True when the service runs the SMTP server (any name, port or type)."""
        return self.command.rsplit("/", 1)[-1] == "smtpd"




def logical_lines(lines: Sequence[PhysicalLine]) -> list[tuple[int, ...]]:
    """Group physical line indexes into logical lines; skipped lines and orphan continuations are left out."""
    groups: list[list[int]] = []
    for index, line in enumerate(lines):
        stripped = line.body.lstrip(WHITESPACE)
        if not stripped or stripped.startswith("#"):
            continue
        if line.body[0] in WHITESPACE:
            if groups:
                groups[-1].append(index)
            continue
        groups.append([index])
    return [tuple(group) for group in groups]


def parse_parameters(lines: Sequence[PhysicalLine]) -> list[Parameter]:
    """Every ``name = value`` logical line of a main.cf, in file order, read as Postfix reads it: the physical
    lines joined, then split at the first ``=`` (which may sit on a continuation line). A logical line
    without ``=`` is skipped (Postfix refuses the whole file for it, and so does validation).

    Raises ConfigError (naming main.cf and the line) for a NUL byte inside a setting: Postfix stops reading
    the logical line at it, so the value it uses is not the text; no parse of such a file can be trusted."""
    parameters = []
    for group in logical_lines(lines):
        _refuse_nul(lines, group, "main.cf")
        bodies = [lines[index].body for index in group]
        match = _NAME_VALUE.fullmatch("".join(bodies))
        if match is None:
            continue
        pieces, start = [], 0
        for body in bodies:   # the value, cut back into its physical lines
            pieces.append(body[max(match.start(2) - start, 0):])
            start += len(body)
        value = " ".join(piece.strip(WHITESPACE) for piece in pieces if piece.strip(WHITESPACE))
        parameters.append(Parameter(match.group(1), value, group))
    return parameters


def _refuse_nul(lines: Sequence[PhysicalLine], group: Sequence[int], file: str) -> None:
    for index in group:
        if "\x00" in lines[index].body:
            raise ConfigError("a NUL byte inside a setting: Postfix stops reading the line there, so what it "
                              "makes of this file cannot be read reliably; remove the byte (a text file holds "
                              "none) and run again", path=file, line=index + 1)


@lru_cache(maxsize=4)
def _parsed(text: str) -> tuple[tuple[PhysicalLine, ...], tuple[Parameter, ...]]:
    """The physical lines of ``text`` and its parameters. Cached: a policy's transforms and the audit read
    the same text several times, and a large main.cf (megabytes) would otherwise be parsed each time."""
    lines = tuple(split_lines(text))
    return lines, tuple(parse_parameters(lines))


@lru_cache(maxsize=4)
def effective_parameters(text: str) -> Mapping[str, Parameter]:
    """The occurrence of each parameter that Postfix uses: the last one in the file (read-only)."""
    return MappingProxyType({parameter.name: parameter for parameter in _parsed(text)[1]})


def split_list(value: str) -> list[str]:
    """Split a Postfix list on commas and whitespace, keeping ``{ ... }`` groups and ``${...}`` whole."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for char in value:
        if depth == 0 and (char in WHITESPACE or char == ","):
            if current:
                items.append("".join(current))
                current = []
            continue
        if char == "{":
            depth += 1
        elif char == "}" and depth:
            depth -= 1
        current.append(char)
    if current:
        items.append("".join(current))
    return items


def unclosed_brace(value: str) -> bool:
    """True when a ``{`` of `value` is never closed: Postfix (mystrtokq) then reads the rest as one word."""
    depth = 0
    for char in value:
        if char == "{":
            depth += 1
        elif char == "}" and depth:
            depth -= 1
    return depth > 0


def reference(item: str) -> str | None:
    """The parameter name of a whole-item ``$name`` or ``${name}`` reference, else None."""
    match = re.fullmatch(r"\$(?:(\w+)|\{(\w+)\})", item)
    return None if match is None else (match.group(1) or match.group(2))


def expand(items: Iterable[str], values: Mapping[str, str], _depth: int = 0) -> list[str]:
    """Replace ``$name`` items by the items of that parameter's value; unknown references stay as they are."""
    out: list[str] = []
    for item in items:
        name = reference(item)
        if name is None or name not in values or _depth > 8:
            out.append(item)
        else:
            out.extend(expand(split_list(values[name]), values, _depth + 1))
    return out


@dataclass(frozen=True, slots=True)
class Restriction:
    """One restriction of an ``smtpd_*_restrictions`` list with its table or domain argument."""

    name: str
    args: tuple[str, ...] = ()

    def __str__(self) -> str:
        return " ".join((self.name, *self.args))


def parse_restrictions(value: str) -> list[Restriction]:
    """A restriction list as items; lookups and DNS lists keep the one argument that follows them."""
    tokens = split_list(value)
    items: list[Restriction] = []
    position = 0
    while position < len(tokens):
        name = tokens[position]
        position += 1
        if _TAKES_ARGUMENT.fullmatch(name.lower()) and position < len(tokens):
            items.append(Restriction(name, (tokens[position],)))
            position += 1
        else:
            items.append(Restriction(name))
    return items


def compatibility_level(values: Mapping[str, str]) -> tuple[int, ...]:
    """``compatibility_level`` as a version tuple; absent or unreadable counts as 0 (the legacy defaults)."""
    match = re.fullmatch(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", values.get("compatibility_level", "").strip())
    return tuple(int(part) for part in match.groups() if part is not None) if match else (0,)


def parse_network(entry: str) -> Network | None:
    """A literal Postfix network (``a.b.c.d[/n]``, ``[v6][/n]``), IPv4-mapped IPv6 as IPv4; else None."""
    try:
        bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?:/(\d{1,3}))?", entry)
        if bracketed and ":" in bracketed.group(1):
            network = ipaddress.IPv6Network(f"{bracketed.group(1)}/{bracketed.group(2) or 128}", strict=False)
            mapped = network.network_address.ipv4_mapped
            if mapped is not None and network.prefixlen >= 96:
                return ipaddress.IPv4Network((mapped, network.prefixlen - 96), strict=False)
            return network
        plain = re.fullmatch(r"(\d{1,3}(?:\.\d{1,3}){3})(?:/(\d{1,2}))?", entry)
        if plain:
            return ipaddress.IPv4Network(f"{plain.group(1)}/{plain.group(2) or 32}", strict=False)
    except ValueError:
        return None
    return None





def set_parameter(text: str, name: str, value: str) -> str:
    """Write ``name = value``: replace the effective logical line of ``name`` or append one at the end.

    The continuation lines of the replaced logical line go; comment and blank lines inside it stay. Every
    other byte, including the final-newline state, is kept.
    """
    lines, parameters = _parsed(text)
    new_body = f"{name} = {value}".rstrip(WHITESPACE)
    occurrences = [parameter for parameter in parameters if parameter.name == name]
    if not occurrences:
        eol = dominant_eol(lines)
        if not text:
            return new_body + eol
        if text.endswith("\n"):
            return text + new_body + eol
        return text + completing_eol(text, eol) + new_body
    target = occurrences[-1]
    first = target.lines[0]
    new_lines = list(lines)
    new_lines[first] = PhysicalLine(new_body, lines[first].eol)
    for index in sorted(target.lines[1:], reverse=True):
        del new_lines[index]
    return join_lines(new_lines, text)


def _tokens(lines: Sequence[PhysicalLine], group: Sequence[int]) -> list[Token]:
    """Words of a master.cf logical line; ``{ ... }`` groups are one word, even across lines."""
    tokens: list[Token] = []
    pieces: list[str] = []
    spans: list[tuple[int, int, int]] = []
    depth = 0
    for index in group:
        body = lines[index].body
        start: int | None = 0 if depth else None
        for column, char in enumerate(body):
            if depth == 0 and char in WHITESPACE:
                if start is not None:
                    pieces.append(body[start:column])
                    spans.append((index, start, column))
                    tokens.append(Token(" ".join(pieces), tuple(spans)))
                    pieces, spans, start = [], [], None
                continue
            if start is None:
                start = column
            if char == "{":
                depth += 1
            elif char == "}" and depth:
                depth -= 1
        if start is not None:
            pieces.append(body[start:])
            spans.append((index, start, len(body)))
            if depth == 0:
                tokens.append(Token(" ".join(pieces), tuple(spans)))
                pieces, spans = [], []
    if pieces:
        tokens.append(Token(" ".join(pieces), tuple(spans)))
    return tokens


def _override(option: Token, argument: Token | None) -> Override | None:
    tokens: tuple[Token, ...] = (option,)
    if option.text == "-o":
        if argument is None:
            return None
        raw, tokens = argument.text, (option, argument)
    else:
        raw = option.text[2:]
    if raw.startswith("{"):
        inner = raw[1:-1] if raw.endswith("}") else raw[1:]
        name, equals, value = inner.partition("=")
        name, value = name.strip(WHITESPACE), value.strip(WHITESPACE)
    else:
        name, equals, value = raw.partition("=")
    if not equals or not name:
        return None
    return Override(name, value, tokens)


def parse_services(text: str, *, strict: bool = False) -> list[Service]:
    """Every service entry of a master.cf with its ``-o`` overrides, in file order. `strict` (for judging and
    editing): ConfigError naming master.cf and the line for a NUL byte inside an entry, as `parse_parameters`
    (not strict, what finds the services to probe: a NUL is one more character). A run parses the same
    master.cf several times (each probe's services, the simulation, the audit): the parse is kept (frozen)."""
    return list(_parsed_services(text, strict))


@lru_cache(maxsize=64)
def _parsed_services(text: str, strict: bool) -> tuple[Service, ...]:
    lines = split_lines(text)
    services = []
    for group in logical_lines(lines):
        if strict:
            _refuse_nul(lines, group, "master.cf")
        tokens = _tokens(lines, group)
        if len(tokens) < 8:
            continue
        overrides = []
        args = tokens[8:]
        position = 0
        while position < len(args):
            token = args[position]
            if token.text == "-o":
                argument = args[position + 1] if position + 1 < len(args) else None
                override = _override(token, argument)
                position += 2
            elif token.text.startswith("-o"):
                override = _override(token, None)
                position += 1
            else:
                override = None
                position += 1
            if override is not None:
                overrides.append(override)
        services.append(Service(tokens[0].text, tokens[1].text, tokens[7].text, group[0] + 1,
                                tuple(overrides)))
    return tuple(services)


def remove_overrides(text: str, overrides: Iterable[Override]) -> str:
    """Delete the given ``-o`` arguments from a master.cf.

    A continuation line left with nothing but whitespace is deleted whole; otherwise the words and one
    separating blank go; a service's first line is never deleted. Every other byte stays.
    """
    lines = split_lines(text)
    cuts: dict[int, list[tuple[int, int]]] = {}
    for override in overrides:
        per_line: dict[int, tuple[int, int]] = {}
        for token in override.tokens:
            for index, start, end in token.spans:
                low, high = per_line.get(index, (start, end))
                per_line[index] = (min(low, start), max(high, end))
        for index, span in per_line.items():
            cuts.setdefault(index, []).append(span)
    new_lines = list(lines)
    for index in sorted(cuts, reverse=True):
        body = lines[index].body
        for start, end in sorted(cuts[index], reverse=True):
            if start > 0 and body[start - 1] in " \t":
                start -= 1
            elif end < len(body) and body[end] in " \t":
                end += 1
            body = body[:start] + body[end:]
        if not body.strip(WHITESPACE) and lines[index].body[0] in WHITESPACE:
            del new_lines[index]
        else:
            new_lines[index] = PhysicalLine(body, lines[index].eol)
    return join_lines(new_lines, text)
