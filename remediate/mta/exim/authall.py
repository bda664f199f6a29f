"""Policy auth-all for Exim: a submission-only server refuses every unauthenticated client.

The RCPT ACL gets a demand for authentication as its first statement after the accept for local (non-TCP)
submission, before anything else can accept a recipient (Debian's ACL accepts `postmaster@` a local domain
from anyone early on): a `deny` with `!authenticated = *` (mail-domain.md 4.3 b) and, where the configuration
defines `relay_from_hosts`, `!hosts = +relay_from_hosts`, so trusted hosts keep relaying as Postfix's
`permit_mynetworks, permit_sasl_authenticated, reject` lets them. Pure; no I/O.
"""

from __future__ import annotations

from remediate.model import Finding
from remediate.mta.exim.rules import MODIFIERS, Walk, _acls, _gate_position
from remediate.mta.exim.syntax import Acl, Config, Statement, insert_lines, parse_config
from remediate.mta.lines import dominant_eol, join_lines

DEMAND = ("  deny", "    message = authentication required", "    !authenticated = *")
TRUSTED = "    !hosts = +relay_from_hosts"


def _local_only(statement: Statement) -> bool:
    """`accept hosts = :`: mail submitted locally, not over TCP/IP."""
    return statement.verb == "accept" and any(c.name == "hosts" and not c.negated and (c.value or "").strip() in
                                              (":", "") for c in statement.conditions)


def _demands_auth(statement: Statement) -> bool:
    """`deny !authenticated = *` (trusted hosts may be exempt) or `require authenticated = *`, with nothing
    else narrowing it (a port check, another list) but modifiers."""
    auth = [c for c in statement.conditions if c.name == "authenticated"]
    others = [c for c in statement.conditions if c.name != "authenticated" and c.name not in MODIFIERS
              and not (c.name == "hosts" and c.negated and (c.value or "").strip() == "+relay_from_hosts")]
    wanted = statement.verb in ("deny", "drop") and any(c.negated for c in auth) or \
        statement.verb == "require" and any(not c.negated for c in auth)
    return wanted and not others


def _missing(config: Config, acl: Acl) -> int | None:
    """Where the demand goes in `acl` (a line index), or None when the ACL demands it before any accept but
    the one for local submission."""
    for statement in acl.statements:
        if _demands_auth(statement):
            return None
        if statement.verb in ("accept", "discard") and not _local_only(statement):
            break
    if not acl.statements:
        return acl.header.last + 1
    local = acl.statements[:1] if _local_only(acl.statements[0]) else []
    following = acl.statements[len(local):]
    if not following:
        return acl.statements[-1].last + 1
    return _gate_position(config, acl, Walk(following[0], tuple(local), ()))


def require_auth_all(text: str, *, context: str = "") -> str:
    """Insert the demand for authentication into the RCPT ACL (see the module docstring) when it has none
    before a statement that may accept. `context`: other configuration text, read for `relay_from_hosts`.
    Text without an RCPT ACL comes back unchanged (the same object)."""
    config = parse_config(text)
    places = {p for acl in _acls(config, "rcpt") if (p := _missing(config, acl)) is not None}
    if not places:
        return text
    named = set(config.named("hostlist")) | (set(parse_config(context).named("hostlist")) if context else set())
    demand = [*DEMAND, TRUSTED] if "relay_from_hosts" in named else list(DEMAND)
    lines = list(config.lines)
    for position in sorted(places, reverse=True):
        insert_lines(lines, position, demand, dominant_eol(lines))
    return join_lines(lines, text)


def audit_auth_all(texts: dict[str, str], paths: dict[str, str]) -> list[Finding]:
    """Under policy auth-all: each RCPT ACL that accepts recipients from unauthenticated outsiders."""
    found = []
    for name, text in texts.items():
        config = parse_config(text)
        for acl in _acls(config, "rcpt"):
            if _missing(config, acl) is not None:
                found.append(Finding("open_relay", (
                    f"{acl.name} accepts recipients from unauthenticated clients, which policy auth-all refuses "
                    "(deny !authenticated = *, trusted hosts exempt, before any other accept)"),
                    "config", paths.get(name, name), acl.header.line, acl.name))
    return found
