"""Exim (Debian 12): what lets outsiders relay or log in anonymously, and the edits that stop it.

Every transform is ``fn(text, **params) -> str`` and guarantees:

- it is pure and idempotent: ``f(f(x)) == f(x)``;
- it returns ``text`` itself (the same object) when nothing needs changing;
- it edits only what its docstring names: a value inside its quotes (update-exim4.conf.conf), a list or
  condition value (the continuation lines of that value go), whole lines prefixed with ``# remediate: ``, or
  inserted lines with the file's own line ending. Comments, blank lines, order, line endings and the
  final-newline state stay byte for byte.

The transforms and :func:`audit` share one set of judgements (the ``_*_problem`` functions and :func:`_walk`):
every ``open_relay`` and ``anonymous_auth`` finding names something a transform changes, and after the
transforms none remains. Bad arguments raise :class:`~remediate.errors.ConfigError`.

Sources: the Exim 4.96 specification (chapters 6 "runtime configuration file", 10 "lists", 33 "SMTP
authentication" with the plaintext, cyrus_sasl and gsasl chapters, 44 "access control lists"), Debian's
exim4-config 4.96 (README.Debian "Do NOT list 0.0.0.0/0!", update-exim4.conf(8) and its script,
conf.d/acl/30_exim4-config_check_rcpt) and mail-domain.md 4 and 8.

Hosts: an outside client is one outside the trusted networks. A host list item is trusted when it is a literal
network inside them, an empty item (no remote host), a negative item, ``+relay_from_hosts`` (judged where it is
defined), a named host list or macro in view whose value is trusted, or a macro defined elsewhere (judged there:
Debian's MAIN_RELAY_NETS comes from dc_relay_nets). Anything else (``*``, names, lookups, expansions, undefined
named lists) may match an outsider; so does every other host when a list's last item is negative.

ACLs are read as Exim runs them for an untrusted, unauthenticated client asking for a foreign domain (not in
``+local_domains`` or ``+relay_to_domains``). Settingal directives are not evaluated: every branch counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from remediate.errors import ConfigError
from remediate.model import Finding
from remediate.mta.exim.syntax import (
    MACRO_NAME,
    WHITESPACE,
    Acl,
    Config,
    Driver,
    ExList,
    ListItem,
    Network,
    PhysicalLine,
    Setting,
    Statement,
    debian_list,
    debian_without,
    exim_list_notation,
    insert_lines,
    join_lines,
    parse_config,
    parse_network,
    parse_update_conf,
    replace_value,
    set_assignment,
    split_list,
    without,
)
from remediate.mta.lines import dominant_eol

__all__ = ["POLICIES", "audit", "disable_open_authenticators", "ensure_relay_gate", "exim_list_notation",
           "restrict_acl_hosts", "restrict_relay_domains", "restrict_relay_nets", "update_conf_value"]
POLICIES = ("relay-auth", "auth-all")
GATE = ("  require", "    message = relay not permitted", "    domains = ")  # Debian's indentation
COMMENT = "# remediate: "
AUTH_DRIVERS = frozenset({"cram_md5", "cyrus_sasl", "dovecot", "external", "gsasl", "heimdal_gssapi",
                          "plaintext", "spa", "tls"})
CONDITION_SERVERS = frozenset({"plaintext", "external", "gsasl"})   # a server only with server_condition
ALWAYS_SERVERS = frozenset({"cyrus_sasl", "heimdal_gssapi"})
SASL = frozenset({"cyrus_sasl", "gsasl"})                          # server_mech defaults to public_name
MODIFIERS = frozenset({"add_header", "continue", "control", "delay", "endpass", "log_message",
                       "log_reject_target", "logwrite", "message", "queue", "remove_header", "set", "udpsend"})
_IF = re.compile(r"\$\{if\s*(!?)\s*(true|false)\s*(?:\{([^{}]*)\}\s*(?:\{([^{}]*)\})?)?\s*\}", re.IGNORECASE)
_SECOND_LEVEL = re.compile(r"(?:ac|co|com|edu|go|gov|ne|net|or|org)\.[a-z]{2}", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Hosts:
    """What host lists are judged against: the trusted networks, and the named host lists and macros in view."""

    trusted: tuple[Network, ...]
    lists: Mapping[str, str]
    macros: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Walk:
    """An ACL up to the first statement that refuses the outsider's foreign domain (a gate) or may accept it
    (``opener``); ``grants``: the accepts by host or authentication before it; ``exposed``: the ``hosts``
    conditions among them, or of the gate's exemptions, that let outside clients through."""

    opener: Statement | None
    grants: tuple[Statement, ...]
    exposed: tuple[tuple[Statement, Setting], ...]


def _trusted(trusted_networks: Sequence[str]) -> tuple[Network, ...]:
    if isinstance(trusted_networks, str) or not isinstance(trusted_networks, Sequence):
        raise ConfigError("expected a list of networks in Exim list notation", key="trusted_networks")
    networks = []
    for entry in trusted_networks:
        network = parse_network(entry.replace("::", ":")) if isinstance(entry, str) else None
        if network is None:
            raise ConfigError(f"{entry!r} is not a network in Exim list notation, like 10.0.0.0/8 or ::::1/128 "
                              "(IPv6 colons doubled)", key="trusted_networks")
        networks.append(network)
    return tuple(networks)


def _host_item_problem(item: ListItem, hosts: Hosts, separator: str = ":", depth: int = 0) -> str | None:
    """Why a host list item may match an outside client, or None (see the module docstring)."""
    text = item.text
    if item.negated or not text or text == "+relay_from_hosts":
        return None
    if text.startswith("+") or MACRO_NAME.fullmatch(text):
        value = hosts.lists.get(text[1:]) if text.startswith("+") else hosts.macros.get(text)
        if value is None and not text.startswith("+"):
            return None
        if value is None or depth > 8:
            return f"{text} (a named host list not defined in the text read)"
        inner = _host_list_problem(value, hosts, separator, depth + 1)
        return None if inner is None else f"{text} ({inner})"
    network = parse_network(text)
    if network is not None and any(network.version == t.version and network.subnet_of(t)  # type: ignore[arg-type]
                                   for t in hosts.trusted):
        return None
    return f"{text!r} is not a network inside the trusted networks"


def _host_list_problem(value: str | None, hosts: Hosts, separator: str = ":", depth: int = 0) -> str | None:
    items = split_list(value or "", separator)
    for item in items.items:
        if (problem := _host_item_problem(item, hosts, items.separator, depth)) is not None:
            return problem
    if items.items and items.items[-1].negated:
        return "the list ends with a negative item, so it matches every other host"
    return None


def _with_trailing_negatives(items: ExList, drop: set[int]) -> list[int]:
    """``drop`` plus the negative items no kept positive item follows (left alone, they match everything)."""
    for index in range(len(items.items) - 1, -1, -1):
        if index not in drop and not items.items[index].negated:
            break
        drop.add(index)
    return sorted(drop)


def _wildcard(item: ListItem) -> bool:
    """A positive domain list item matching domains nobody chose: ``*``, ``*.tld``, ``*.co.uk``-like."""
    suffix = item.text[1:].lstrip(".") if item.text.startswith("*") else None
    return not item.negated and suffix is not None and ("." not in suffix or bool(_SECOND_LEVEL.fullmatch(suffix)))


def _closed_domains(value: str | None) -> bool:
    """A domain list that matches only chosen domains: named lists, literal domains, lookups."""
    items = split_list(value or "").items
    return bool(items) and not items[-1].negated and not any(
        _wildcard(item) or item.text.startswith("^") or "$" in item.text for item in items if not item.negated)


def _constant(value: str | None) -> bool | None:
    """The truth of an Exim condition string that needs no lookup (``yes``, ``${if true}``...), or None
    (spec 33: 1/yes/true succeed; empty/0/no/false fail)."""
    text = (value or "").strip(WHITESPACE)
    if text.lower() in ("1", "yes", "true", "", "0", "no", "false"):
        return text.lower() in ("1", "yes", "true")
    match = _IF.fullmatch(text)
    if match is None:
        return None
    holds = (match.group(2).lower() == "true") != bool(match.group(1))
    return holds if match.group(3) is None else _constant(match.group(3) if holds else (match.group(4) or ""))


def _by_auth(condition: Setting) -> bool:
    """A positive ``authenticated`` or ``verify = certificate`` condition: a grant to proven clients."""
    return not condition.negated and (condition.name == "authenticated" or (
        condition.name == "verify" and (condition.value or "").strip(WHITESPACE).startswith("certificate")))


def _never_true(condition: Setting, hosts: Hosts) -> bool:
    """True when ``condition`` fails for an untrusted, unauthenticated client asking for a foreign domain."""
    if condition.negated:
        return False
    if condition.name == "hosts":
        return _host_list_problem(condition.value, hosts) is None
    return (condition.name == "domains" and _closed_domains(condition.value)) or _by_auth(condition) or (
        condition.name == "condition" and _constant(condition.value) is False)


def _refuses_foreign(statement: Statement) -> bool:
    """A gate: a ``require`` with a closed ``domains`` list (Debian's), or a ``deny`` with ``!domains =
    <closed list>`` whose other conditions are ``!authenticated`` or ``!hosts`` exemptions of literal networks,
    named lists and macros (their trust is judged apart, as exposures)."""
    conditions = statement.conditions
    if statement.verb == "require":
        return any(c.name == "domains" and not c.negated and _closed_domains(c.value) for c in conditions)
    gates = [c for c in conditions if c.name == "domains" and c.negated and _closed_domains(c.value)]
    return statement.verb in ("deny", "drop", "defer") and bool(gates) and all(
        c.negated and (c.name == "authenticated" or (c.name == "hosts" and all(
            i.negated or not i.text or i.text.startswith("+") or MACRO_NAME.fullmatch(i.text)
            or parse_network(i.text) for i in split_list(c.value or "").items)))
        for c in conditions if c not in gates and c.name not in MODIFIERS)


def _classify(statement: Statement, hosts: Hosts) -> str:
    """``gate``, ``grant`` (an accept by host or authentication), ``opener`` (an accept that may take an
    outsider's foreign recipient) or ``other``. Only grants' exposure depends on the trusted networks."""
    if _refuses_foreign(statement):
        return "gate"
    if statement.verb != "accept":
        return "other"
    if any(_by_auth(c) or (c.name == "hosts" and not c.negated) for c in statement.conditions):
        return "grant"
    return "other" if any(_never_true(c, hosts) for c in statement.conditions) else "opener"


def _exposed(statement: Statement, kind: str, hosts: Hosts) -> list[Setting]:
    """The ``hosts`` conditions that let outside clients through a grant without authentication, or through
    a gate's exemption."""
    conditions = statement.conditions
    if kind == "gate":
        return [c for c in conditions if c.name == "hosts" and c.negated and _host_list_problem(c.value, hosts)]
    if kind != "grant" or any(_never_true(c, hosts) for c in conditions):
        return []
    return [c for c in conditions if c.name == "hosts" and not c.negated]


def _walk(acl: Acl, hosts: Hosts) -> Walk:
    grants: list[Statement] = []
    exposed: list[tuple[Statement, Setting]] = []
    for statement in acl.statements:
        kind = _classify(statement, hosts)
        exposed += [(statement, c) for c in _exposed(statement, kind, hosts)]
        if kind in ("gate", "opener"):
            return Walk(statement if kind == "opener" else None, tuple(grants), tuple(exposed))
        if kind == "grant":
            grants.append(statement)
    return Walk(None, tuple(grants), tuple(exposed))


def _mail_exposed(acl: Acl, hosts: Hosts) -> list[tuple[Statement, Setting]]:
    """In the MAIL ACL: ``hosts`` conditions of accepts that let outside clients skip a later demand for
    authentication (``deny !authenticated = *`` or ``require authenticated = *``, mail-domain.md 4.3 b)."""
    found: list[tuple[Statement, Setting]] = []
    for statement in acl.statements:
        if statement.verb in ("deny", "drop", "defer", "require") and any(
                c.name == "authenticated" and c.negated != (statement.verb == "require") for c in statement.conditions):
            return found
        kind = _classify(statement, hosts)
        if kind == "opener":
            return []
        found += [(statement, c) for c in _exposed(statement, kind if kind == "grant" else "", hosts)]
    return []


def _acls(config: Config, which: str) -> list[Acl]:
    """The ACLs ``acl_smtp_<which>`` names (literally or through a macro), else ``acl_check_<which>``."""
    default = f"acl_check_{which}"
    value = config.settings.get(f"acl_smtp_{which}", default).strip(WHITESPACE)
    value = config.macros.get(value, value).strip(WHITESPACE)
    name = value if re.fullmatch(r"[a-z_]\w*", value) else default
    return [acl for acl in config.acls if acl.name == name]


def _exposures(config: Config, hosts: Hosts) -> list[tuple[Acl, Statement, Setting]]:
    found = [(acl, s, c) for acl in _acls(config, "rcpt") for s, c in _walk(acl, hosts).exposed]
    return found + [(acl, s, c) for acl in _acls(config, "mail") for s, c in _mail_exposed(acl, hosts)]


def _auth_problem(driver: Driver, macros: Mapping[str, str]) -> str | None:
    """Why a server authenticator lets anyone in (ANONYMOUS, or always succeeding), or None. Server: for
    plaintext, external and gsasl, a set server_condition; cyrus_sasl and heimdal_gssapi always; others, any
    server_* option (spec 33 and the driver chapters; mail-domain.md 4.2)."""
    kind = (driver.value("driver") or "").strip(WHITESPACE).lower()
    if driver.section not in ("authenticators", "unknown") or kind not in AUTH_DRIVERS:
        return None
    condition = driver.value("server_condition")
    for _ in range(8):   # a macro standing for the whole condition
        condition = macros.get((condition or "").strip(WHITESPACE), condition)
    if not (condition is not None if kind in CONDITION_SERVERS else
            kind in ALWAYS_SERVERS or any(o.name.startswith("server_") for o in driver.options)):
        return None
    public = (driver.value("public_name") or driver.name).strip(WHITESPACE)
    mech = (driver.value("server_mech") or public).strip(WHITESPACE) if kind in SASL else public
    if "ANONYMOUS" in (public.upper(), mech.upper()):
        return f"{driver.name} (driver = {kind}) offers ANONYMOUS: anyone can authenticate with no credential"
    simple = kind != "gsasl" or mech.upper() in ("PLAIN", "LOGIN", "EXTERNAL")
    if kind in CONDITION_SERVERS and simple and _constant(condition) is True:
        return f"{driver.name} (driver = {kind}): server_condition = {condition!r} is always true"
    return None


def _hosts(trusted: tuple[Network, ...], *configs: Config | None) -> Hosts:
    """Judgement context: the named host lists and macros of every config given (later ones win)."""
    lists: dict[str, str] = {}
    macros: dict[str, str] = {}
    for config in configs:
        if config is not None:
            lists.update(config.named("hostlist"))
            macros.update(config.macros)
    return Hosts(trusted, lists, macros)


# ---------------------------------------------------------------------------------------------------------
# update-exim4.conf.conf

def _relay_nets_drop(items: ExList, trusted: tuple[Network, ...]) -> list[int]:
    hosts = Hosts(trusted, {}, {})
    return [n for n, item in enumerate(items.items) if _host_item_problem(item, hosts, items.separator)]


def _relay_domains_drop(items: ExList) -> list[int]:
    return _with_trailing_negatives(items, {n for n, item in enumerate(items.items) if _wildcard(item)})


def update_conf_value(text: str, name: str) -> str | None:
    """The value update-exim4.conf.conf gives ``name`` (its last assignment, quotes removed, case kept)."""
    assignment = parse_update_conf(text).get(name)
    return None if assignment is None else assignment.value


def _narrow_update_conf(text: str, name: str, drop_of: Callable[[ExList], list[int]]) -> str:
    assignment = parse_update_conf(text).get(name)
    if assignment is None:
        return text
    items = debian_list(assignment.value)
    drop = drop_of(items)
    return set_assignment(text, assignment, debian_without(items, drop)) if drop else text


def restrict_relay_nets(text: str, *, trusted_networks: list[str]) -> str:
    """Keep only the ``dc_relay_nets`` entries inside ``trusted_networks`` (Exim list notation, see
    :func:`exim_list_notation`); ``''`` when none is left (update-exim4.conf adds 127.0.0.1 and ::1 itself).
    README.Debian: "Do NOT list 0.0.0.0/0!". Raises ConfigError for a network not in Exim notation."""
    trusted = _trusted(trusted_networks)
    return _narrow_update_conf(text, "dc_relay_nets", lambda items: _relay_nets_drop(items, trusted))


def restrict_relay_domains(text: str) -> str:
    """Remove the ``dc_relay_domains`` entries that match any foreign domain (``*``, ``*.tld``, trailing
    negative items); explicit domains (a real backup MX) stay."""
    return _narrow_update_conf(text, "dc_relay_domains", _relay_domains_drop)


# ---------------------------------------------------------------------------------------------------------
# Exim configuration text

def disable_open_authenticators(text: str) -> str:
    """Comment out (``# remediate: `` before each line) every server authenticator that offers ANONYMOUS or
    always succeeds: its ``name:`` line and option lines; comments and directives inside it stay as they are.
    Client-only authenticators are left alone."""
    config = parse_config(text)
    doomed = sorted({n for driver in config.drivers if _auth_problem(driver, config.macros)
                     for logical in (driver.header, *(o.logical for o in driver.options))
                     for n, _, _ in logical.segments})
    if not doomed:
        return text
    lines = list(config.lines)
    for n in doomed:
        lines[n] = PhysicalLine(COMMENT + lines[n].body, lines[n].eol)
    return join_lines(lines, text)


def _gate_position(config: Config, acl: Acl, walk: Walk) -> int:
    """Right after the last grant before the first opener (else after the statement before it, else after the
    ACL's name), moved on until back at the ACL's own ``.if`` depth, never past the opener."""
    opener = walk.opener
    assert opener is not None
    before = [s for s in acl.statements if s.first < opener.first]
    anchor = walk.grants[-1] if walk.grants else (before[-1] if before else None)
    position = (anchor.last if anchor else acl.header.last) + 1
    while position < opener.first and config.depth[position] != config.depth[acl.header.first]:
        position += 1
    return position


def ensure_relay_gate(text: str, *, context: str = "") -> str:
    """Insert Debian's relay check (``require`` / ``message = relay not permitted`` / ``domains =
    +local_domains : +relay_to_domains``, indented as in conf.d/acl/30_exim4-config_check_rcpt) into the RCPT
    ACL when nothing there refuses a foreign domain to an outsider before a statement that may accept it; at
    :func:`_gate_position`. When the text and ``context`` (other configuration text, read only for names)
    define just one of the two domain lists, only that one is named. Other text comes back unchanged."""
    config = parse_config(text)
    hosts = _hosts((), config)
    places = {_gate_position(config, acl, walk) for acl in _acls(config, "rcpt")
              if (walk := _walk(acl, hosts)).opener is not None}
    if not places:
        return text
    defined = set(config.named("domainlist")) | set(parse_config(context).named("domainlist") if context else ())
    names = [n for n in ("local_domains", "relay_to_domains") if n in defined] or ["local_domains",
                                                                                    "relay_to_domains"]
    lines = list(config.lines)
    for position in sorted(places, reverse=True):
        insert_lines(lines, position, [*GATE[:2], GATE[2] + " : ".join(f"+{n}" for n in names)],
                     dominant_eol(lines))
    return join_lines(lines, text)


def _narrowed_hosts(value: str, hosts: Hosts) -> str:
    items = split_list(value)
    drop = _with_trailing_negatives(items, {n for n, item in enumerate(items.items)
                                            if _host_item_problem(item, hosts, items.separator)})
    if len(drop) < len(items.items):
        return without(items, drop)
    if items.separator == ":":
        return " : ".join(exim_list_notation(network) for network in hosts.trusted)
    return f"<{items.separator} " + f" {items.separator} ".join(str(network) for network in hosts.trusted)


def restrict_acl_hosts(text: str, *, trusted_networks: list[str], context: str = "") -> str:
    """In the RCPT ACL (before its relay check) and the MAIL ACL (before a demand for authentication), a
    ``hosts =`` that lets outside clients through an ``accept`` without authentication (or through a deny
    gate's ``!hosts`` exemption) becomes ``+relay_from_hosts``, or the trusted networks when no ``hostlist
    relay_from_hosts`` is in view and the text is not a conf.d fragment (Debian's conf.d/main/01 defines it).
    A ``hostlist relay_from_hosts`` keeps only its trusted items, or gets the trusted networks when none is
    left. ``context``: other configuration text (the rest of a split config), read only for named host lists
    and macros. Raises ConfigError for a network not in Exim notation."""
    trusted = _trusted(trusted_networks)
    config = parse_config(text)
    hosts = _hosts(trusted, parse_config(context) if context else None, config)
    by_name = "relay_from_hosts" in hosts.lists or config.fragment
    replacement = "+relay_from_hosts" if by_name else " : ".join(exim_list_notation(n) for n in trusted)
    edits = {c.logical.first: (c.logical, c.value_offset, replacement) for _, _, c in _exposures(config, hosts)}
    edits |= {named.logical.first: (named.logical, named.value_offset, _narrowed_hosts(named.value, hosts))
              for named in config.lists if named.kind == "hostlist" and named.name == "relay_from_hosts"
              and _host_list_problem(named.value, hosts)}
    if not edits:
        return text
    lines = list(config.lines)
    for first in sorted(edits, reverse=True):
        replace_value(lines, *edits[first])
    return join_lines(lines, text)


# ---------------------------------------------------------------------------------------------------------
# Audit

def _audit_update_conf(text: str, file: str, trusted: tuple[Network, ...], configs: Sequence[Config]) -> list[Finding]:
    def finding(name: str, macro: str, detail: str) -> Finding:
        full = [config for config in configs if not config.fragment]   # a conf.d file alone cannot tell
        if full and not any(macro in named.value for config in full for named in config.lists):
            detail += f"; the configuration read does not use {macro}, so this matters only once it does again"
        return Finding("open_relay", detail, "config", file, assignments[name].line, name)

    findings, assignments = [], parse_update_conf(text)
    if (nets := assignments.get("dc_relay_nets")) and (drop := _relay_nets_drop(items := debian_list(nets.value),
                                                                                trusted)):
        findings.append(finding("dc_relay_nets", "MAIN_RELAY_NETS", (
            f"dc_relay_nets = {nets.value!r}: {items.items[drop[0]].text!r} is not inside the trusted networks; "
            "update-exim4.conf makes it hostlist relay_from_hosts (MAIN_RELAY_NETS), whose hosts may relay "
            "(README.Debian: \"Do NOT list 0.0.0.0/0!\")")))
    if (domains := assignments.get("dc_relay_domains")) and (drop := _relay_domains_drop(
            items := debian_list(domains.value))):
        item = items.items[drop[0]]
        why = (f"{item.text!r} matches any foreign domain" if _wildcard(item) else
               f"the list ends with a negative item (!{item.text}), so it matches every other domain")
        findings.append(finding("dc_relay_domains", "MAIN_RELAY_TO_DOMAINS", (
            f"dc_relay_domains = {domains.value!r}: {why}; update-exim4.conf makes it domainlist "
            "relay_to_domains, which passes Debian's relay check")))
    return findings


def _audit_config(config: Config, file: str, hosts: Hosts) -> list[Finding]:
    findings = [Finding("anonymous_auth", f"authenticator {problem}", "config", file, driver.header.line, driver.name)
                for driver in config.drivers if (problem := _auth_problem(driver, config.macros))]
    findings += [Finding("open_relay", f"hostlist relay_from_hosts = {named.value!r}: {problem}; every host it "
                         "matches may relay through accept hosts = +relay_from_hosts", "config", file,
                         named.logical.line, "relay_from_hosts")
                 for named in config.lists if named.kind == "hostlist" and named.name == "relay_from_hosts"
                 and (problem := _host_list_problem(named.value, hosts))]
    for acl in _acls(config, "rcpt"):
        if (opener := _walk(acl, hosts).opener) is not None:
            findings.append(Finding("open_relay", (
                f"nothing refuses a foreign domain to an untrusted, unauthenticated client before the "
                f"{opener.verb} statement at line {opener.first + 1}, which may accept it (Debian's relay check "
                "require domains = +local_domains : +relay_to_domains is missing)"),
                "config", file, opener.first + 1, acl.name))
    for acl, statement, condition in _exposures(config, hosts):
        what = "relay" if acl in _acls(config, "rcpt") else "skip the later demand for authentication"
        findings.append(Finding("open_relay", (
            f"{statement.verb} {'!' * condition.negated}hosts = {condition.value!r} (statement at line "
            f"{statement.first + 1}): {_host_list_problem(condition.value, hosts)}; such clients {what} "
            "without authenticating"), "config", file, condition.logical.line, acl.name))
    return findings


def _unused_relay_from_hosts(configs: Sequence[tuple[str, Config]]) -> list[Finding]:
    defined = [(file, named) for file, config in configs for named in config.lists
               if named.kind == "hostlist" and named.name == "relay_from_hosts"]
    acls = [acl for _, config in configs for acl in _acls(config, "rcpt")]
    if not acls or any(item.text == "+relay_from_hosts" for acl in acls for statement in acl.statements
                       for condition in statement.conditions for item in split_list(condition.value or "").items):
        return []
    return [Finding("relay_from_hosts_unused", (
        f"hostlist relay_from_hosts is defined, but {acls[0].name} never uses +relay_from_hosts: relaying does not "
        "depend on it (nor on dc_relay_nets), so narrowing it changes nothing"),
        "config", file, named.logical.line, "relay_from_hosts") for file, named in defined]


def audit(texts: Mapping[str, str], paths: Mapping[str, str] | None = None, *,
          trusted_networks: list[str], policy: str = "relay-auth") -> list[Finding]:
    """Explain, file by file and line by line, what exposes the server (update-exim4.conf.conf first).

    ``texts`` maps names to file texts: ``update_conf`` is update-exim4.conf.conf; every other name is live
    Exim configuration text: ``config`` (the template, a hand-written exim4.conf, or the split config
    concatenated), ``config:<path>`` per conf.d file, or a playbook's file names (``template``,
    ``rcpt_acl``...), in the order Exim reads them. ``paths`` maps the same names to the paths findings name
    (default: the path after ``config:``, else the name). Each configuration text is judged on its own, named
    host lists and macros resolved across all of them (pass the others as ``context`` to
    :func:`restrict_acl_hosts`). Codes: ``open_relay``, ``anonymous_auth`` and the informational
    ``relay_from_hosts_unused``. Both policies judge alike (no transform here is specific to auth-all).
    Raises ConfigError for an unknown policy, or trusted networks not in Exim notation.
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}", key="policy")
    trusted, paths = _trusted(trusted_networks), paths or {}
    configs = [(paths.get(name) or name.removeprefix("config:"), parse_config(text))
               for name, text in texts.items() if name != "update_conf"]
    hosts = _hosts(trusted, *(config for _, config in configs))
    findings = []
    if "update_conf" in texts:
        findings += _audit_update_conf(texts["update_conf"], paths.get("update_conf") or "update_conf", trusted,
                                       [config for _, config in configs])
    for file, config in configs:
        findings += _audit_config(config, file, hosts)
    return findings + _unused_relay_from_hosts(configs)
