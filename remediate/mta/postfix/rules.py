"""Postfix: what in main.cf and master.cf lets outsiders relay or log in anonymously; the edits that stop it.

Every transform is ``fn(text, **params) -> str`` and guarantees:

- it is pure and idempotent: ``f(f(x)) == f(x)``;
- it returns ``text`` itself (the same object) when nothing needs changing;
- it edits only the effective (last) logical line of the parameter it sets, written as ``name = value`` with
  the line's own ending, or appends that line at the end; in master.cf it removes only the offending ``-o``
  arguments. Comments, blank lines, order, line endings and the final-newline state stay byte for byte.

The transforms and :func:`audit` share one set of judgements (the ``_*_problem`` functions): every
``open_relay`` and ``anonymous_auth`` finding names something a transform of the policy changes, and after
those transforms none remains. Bad arguments raise :class:`~remediate.errors.ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from remediate.errors import ConfigError
from remediate.model import Finding
from remediate.mta.postfix.syntax import (
    Network,
    Override,
    Parameter,
    Service,
    compatibility_level,
    effective_parameters,
    expand,
    parse_network,
    parse_restrictions,
    parse_services,
    reference,
    remove_overrides,
    set_parameter,
    split_list,
    unclosed_brace,
)

POLICIES = ("relay-auth", "auth-all")
SAFE_RELAY = "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"
AUTH_ALL_RELAY = "permit_mynetworks, permit_sasl_authenticated, reject"
DEFAULT_RELAY = "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"
RELAY_STOPPERS = frozenset({"reject_unauth_destination", "defer_unauth_destination", "reject", "defer",
                            "defer_if_permit", "check_relay_domains"})
SAFE_PERMITS = frozenset({"permit_mynetworks", "permit_sasl_authenticated", "permit_auth_destination"})
RECIPIENT_GUARDS = ("permit_mynetworks", "permit_sasl_authenticated", "reject_unauth_destination")
SASL_OPTIONS = ("smtpd_sasl_security_options", "smtpd_sasl_tls_security_options")
NONEXISTENT = {
    "smtpd_authentication_required": "smtpd_sasl_auth_enable plus permit_sasl_authenticated in "
                                     "smtpd_relay_restrictions",
    "my_network": "mynetworks", "my_networks": "mynetworks", "mynetwork": "mynetworks",
    "smtpd_relay_restriction": "smtpd_relay_restrictions",
    "smtpd_recipient_restriction": "smtpd_recipient_restrictions",
    "smtpd_sasl_security_option": "smtpd_sasl_security_options",
}
_DEFAULTS = {"smtpd_sasl_security_options": "noanonymous"}
_NAME = re.compile(r"[A-Za-z0-9_]+")
_ACCESS_MAP = re.compile(r"check_\w+_access")
_STOPPERS_TEXT = ", ".join(sorted(RELAY_STOPPERS))


@dataclass(frozen=True, slots=True)
class Walk:
    """Where an unauthenticated outside client asking for a foreign recipient ends up in a restriction list.

    ``outcome`` is ``stopped`` (a relay-stopping restriction comes first), ``permitted`` (something that can
    permit an arbitrary client comes first) or ``fell_through``; ``index`` is the top-level item that decided.
    """

    outcome: str
    index: int
    item: str


def walk_restrictions(value: str, values: Mapping[str, str], _depth: int = 0) -> Walk:
    """Walk a list the way smtpd does for an outsider; ``$name`` and restriction classes are followed
    (built-in restriction names take precedence over class names, as in smtpd).

    Whatever cannot be judged (an undefined class or reference, a conditional ``${...}``) counts as
    permitting.
    """
    classes = set(split_list(values.get("smtpd_restriction_classes", "")))
    items = parse_restrictions(value)
    for index, item in enumerate(items):
        name = item.name.lower()
        if name in RELAY_STOPPERS:
            return Walk("stopped", index, str(item))
        if name in SAFE_PERMITS:
            continue
        if name in ("permit", "ok") or name.startswith("permit_") or _ACCESS_MAP.fullmatch(name):
            return Walk("permitted", index, str(item))
        target = reference(item.name) or (item.name if item.name in classes else None)
        if target is not None:
            nested = values.get(target)
            if nested is None or _depth > 8:
                return Walk("permitted", index, f"{item.name} (cannot be resolved)")
            inner = walk_restrictions(nested, values, _depth + 1)
            if inner.outcome != "fell_through":
                return Walk(inner.outcome, index, f"{inner.item} (via {item.name})")
        elif item.name.startswith("$"):
            return Walk("permitted", index, f"{item.name} (cannot be resolved)")
    return Walk("fell_through", len(items), "")


def _refuses_unauthenticated(value: str, values: Mapping[str, str]) -> bool:
    """True when an unauthenticated outside client is refused for every recipient (policy auth-all)."""
    for item in parse_restrictions(", ".join(expand(split_list(value), values))):
        name = item.name.lower()
        if name in ("reject", "defer"):
            return True
        harmless = name.startswith(("reject_", "defer_", "warn_if_")) or name in (
            "check_policy_service", "sleep", "permit_mynetworks", "permit_sasl_authenticated")
        if not harmless:
            return False
    return False


def _trusted(trusted_networks: Sequence[str]) -> list[Network]:
    networks = []
    for entry in trusted_networks:
        network = parse_network(entry) if isinstance(entry, str) else None
        if network is None:
            raise ConfigError(f"{entry!r} is not a network in Postfix notation, like 10.0.0.0/8 or "
                              "[::1]/128", key="trusted_networks")
        networks.append(network)
    return networks


def _untrusted_entry(items: Sequence[str], trusted: Sequence[Network]) -> str | None:
    """The first mynetworks entry that is not a literal network inside ``trusted`` (``!`` exclusions pass)."""
    for item in items:
        network = parse_network(item.removeprefix("!"))
        if network is None:
            return item
        if item.startswith("!"):
            continue
        if not any(network.version == t.version and int(t.network_address) <= int(network.network_address)
                   and int(network.broadcast_address) <= int(t.broadcast_address) for t in trusted):
            return item
    return None


def _values(params: Mapping[str, Parameter]) -> dict[str, str]:
    return {name: parameter.value for name, parameter in params.items()}


def _relay_problem(params: Mapping[str, Parameter], policy: str) -> str | None:
    values = _values(params)
    current = params.get("smtpd_relay_restrictions")
    if current is None:
        value = DEFAULT_RELAY if compatibility_level(values) >= (1,) else ""
        shown = (f"smtpd_relay_restrictions is not set, so its default ({value}) applies" if value else
                 "smtpd_relay_restrictions is not set and compatibility_level is below 1, so it is empty")
    else:
        value, shown = current.value, f"smtpd_relay_restrictions = {current.value!r}"
    if policy == "auth-all":
        if _refuses_unauthenticated(value, values):
            return None
        return (f"{shown}: unauthenticated clients are not refused for every recipient, as policy auth-all "
                f"requires ({AUTH_ALL_RELAY})")
    walk = walk_restrictions(value, values)
    if walk.outcome == "stopped":
        return None
    if walk.outcome == "permitted":
        why = f"{walk.item!r} comes before any relay-stopping restriction and can accept any outside client"
    elif not value:
        why = "an empty list leaves relay control to smtpd_recipient_restrictions alone"
    else:
        why = f"no relay-stopping restriction ({_STOPPERS_TEXT}) is reached"
    return f"{shown}: {why}"


def _recipient_problem(params: Mapping[str, Parameter]) -> str | None:
    current = params.get("smtpd_recipient_restrictions")
    if current is None:
        return None
    values = _values(params)
    walk = walk_restrictions(current.value, values)
    if walk.outcome != "permitted":
        return None
    masked = _relay_problem(params, "relay-auth") is None
    return (f"smtpd_recipient_restrictions = {current.value!r}: {walk.item!r} comes before "
            "reject_unauth_destination and can accept any outside client for a foreign domain"
            + ("; smtpd_relay_restrictions still refuses relay today, but this list relays as soon as that "
               "one is emptied" if masked else ""))


def holder(params: Mapping[str, Parameter], name: str) -> str:
    """The parameter that holds ``name``'s value: ``name`` itself, or where a chain of whole-value ``$x``
    references (``mynetworks = $my_trusted``) ends among the parameters main.cf sets."""
    seen = {name}
    while name in params and (target := _single_reference(params[name].value) or "") in params \
            and target not in seen:
        seen.add(target)
        name = target
    return name


def _single_reference(value: str) -> str | None:
    items = split_list(value)
    return reference(items[0]) if len(items) == 1 else None


def _references(text: str, name: str) -> int:
    """How many times ``$name``, ``${name}`` or ``$(name)`` occurs in ``text``."""
    return len(re.findall(rf"\$(?:{name}\b|\{{{name}\}}|\({name}\))", text))


def _inbound_problem(params: Mapping[str, Parameter]) -> tuple[str, str] | None:
    """(list, why) when an unauthenticated outside client is refused for every recipient, the host's own
    domains included: an unconditional ``reject`` or ``defer`` reached in either list before anything that
    lets mail for a local domain through (both lists must pass, postconf(5))."""
    values = _values(params)
    relay = params.get("smtpd_relay_restrictions")
    lists = (("smtpd_relay_restrictions", relay.value if relay else
              DEFAULT_RELAY if compatibility_level(values) >= (1,) else ""),
             ("smtpd_recipient_restrictions", values.get("smtpd_recipient_restrictions", "")))
    for name, value in lists:
        for item in parse_restrictions(", ".join(expand(split_list(value), values))):
            lowered = item.name.lower()
            if lowered in ("reject", "defer"):
                return name, (f"{name} = {value!r}: {lowered!r} is reached by every unauthenticated client before "
                              "anything that accepts mail for the host's own domains, so inbound mail is refused")
            if lowered in ("permit", "ok", "permit_auth_destination"):
                break
    return None


def _mynetworks_problem(params: Mapping[str, Parameter], trusted: Sequence[Network]) -> str | None:
    values = _values(params)
    current = params.get("mynetworks")
    if current is None:
        style = values.get("mynetworks_style")
        if style is None and compatibility_level(values) >= (2,):
            return None
        if style is not None and style.strip().lower() == "host":
            return None
        shown = f"mynetworks_style = {style}" if style is not None else \
            "mynetworks_style defaults to subnet (compatibility_level below 2)"
        return f"mynetworks is not set and {shown}: every host on the server's networks may relay"
    entry = _untrusted_entry(expand(split_list(current.value), values), trusted)
    if entry is None:
        return None
    via = holder(params, "mynetworks")
    shown = f"mynetworks = {current.value!r}" + (f" and {via} = {values[via]!r}" if via != "mynetworks" else "")
    return (f"{shown}: {entry!r} is not a literal network inside the trusted "
            "networks, and every client mynetworks matches may relay through permit_mynetworks")


def _sasl_problem(name: str, value: str, values: Mapping[str, str]) -> str | None:
    options = [item.lower() for item in expand(split_list(value), {**_DEFAULTS, **values})]
    if "noanonymous" in options:
        return None
    when = "after STARTTLS" if name == "smtpd_sasl_tls_security_options" else "without TLS"
    return f"{name} = {value!r} lacks noanonymous, so AUTH ANONYMOUS is offered {when}"


def _override_problem(override: Override, values: Mapping[str, str],
                      trusted: Sequence[Network]) -> tuple[str, str] | None:
    """The finding code and reason when a master.cf ``-o`` reopens relay or anonymous AUTH."""
    name, value = override.name, override.value
    resolved = ", ".join(expand(split_list(value), values))
    if name == "mynetworks":
        entry = _untrusted_entry(split_list(resolved), trusted)
        if entry is not None:
            return "open_relay", f"{entry!r} is not a literal network inside the trusted networks"
    elif name == "mynetworks_style" and value.strip().lower() in ("subnet", "class"):
        return "open_relay", f"mynetworks_style={value} trusts every host on the server's networks"
    elif name == "smtpd_relay_restrictions":
        walk = walk_restrictions(value, values)
        if walk.outcome != "stopped":
            return "open_relay", ("no relay-stopping restriction is reached" if walk.outcome == "fell_through"
                                  else f"{walk.item!r} comes before any relay-stopping restriction")
    elif name == "smtpd_recipient_restrictions":
        walk = walk_restrictions(value, values)
        if walk.outcome == "permitted":
            return "open_relay", f"{walk.item!r} comes before any relay-stopping restriction"
    elif name in SASL_OPTIONS:
        problem = _sasl_problem(name, value, values)
        if problem is not None:
            return "anonymous_auth", problem
    return None


def get_parameter(text: str, name: str) -> str | None:
    """The effective value of ``name`` (continuations joined by single spaces, stripped); None when absent."""
    parameter = effective_parameters(text).get(name)
    return None if parameter is None else parameter.value


def postfix_effective(text: str) -> dict[str, str]:
    """Every parameter main.cf sets, with its effective (last) value."""
    return _values(effective_parameters(text))


def ensure_parameter(text: str, *, name: str, value: str) -> str:
    """Set ``name = value`` unless the effective value already equals it (as a comma/whitespace list).

    Raises ConfigError for a name Postfix does not have (like ``my_network``) or a value spanning lines, and
    (naming main.cf and the line) for a value whose ``{`` is never closed: a list rebuilt from such a value
    would swallow what is added to it, and the edit would repeat on every run.
    """
    if not _NAME.fullmatch(name) or name in NONEXISTENT:
        raise ConfigError(f"{name!r} is not a Postfix parameter" + (
            f"; use {NONEXISTENT[name]}" if name in NONEXISTENT else ""), key="name")
    if "\n" in value or "\r" in value:
        raise ConfigError("a parameter value must be a single line", key="value")
    current = effective_parameters(text).get(name)
    if current is not None and split_list(current.value) == split_list(value):
        return text
    if unclosed_brace(value):
        raise ConfigError(f"{name} = {current.value if current else value!r}: a '{{' is never closed, so Postfix "
                          "reads the rest of the value as one word and nothing added to it would count; close or "
                          "remove it by hand, then run again", path="main.cf", line=current.line if current else None)
    return set_parameter(text, name, value.strip())


def secure_relay_restrictions(text: str) -> str:
    """Make ``smtpd_relay_restrictions`` stop unauthenticated relay; a list that already does stays as is."""
    if _relay_problem(effective_parameters(text), "relay-auth") is None:
        return text
    return ensure_parameter(text, name="smtpd_relay_restrictions", value=SAFE_RELAY)


def secure_recipient_restrictions(text: str) -> str:
    """Insert the missing relay guards just before the first item of ``smtpd_recipient_restrictions`` that
    could permit relay; every other item keeps its place. Absent, empty or safe lists stay as they are."""
    params = effective_parameters(text)
    if _recipient_problem(params) is None:
        return text
    current = params["smtpd_recipient_restrictions"]
    walk = walk_restrictions(current.value, _values(params))
    items = [str(item) for item in parse_restrictions(current.value)]
    earlier = {item.split(" ", 1)[0].lower() for item in items[:walk.index]}
    guards = [guard for guard in RECIPIENT_GUARDS if guard not in earlier]
    value = ", ".join(items[:walk.index] + guards + items[walk.index:])
    return ensure_parameter(text, name="smtpd_recipient_restrictions", value=value)


def restrict_mynetworks(text: str, *, trusted_networks: list[str], master_cf: str = "") -> str:
    """Set ``mynetworks`` to the trusted networks unless it already lies inside them (literal networks, after
    ``$name`` references are followed).

    The value is fixed where it lives: when ``mynetworks = $my_trusted`` (a chain of whole-value
    references) and nothing else in main.cf or ``master_cf`` refers to the parameters of the chain, the
    parameter at its end is set, so none is left unused (``postconf`` would warn "unused parameter");
    otherwise ``mynetworks`` itself is set and the others stay in use where they are referred to.
    Raises ConfigError when a trusted network is not in Postfix notation (IPv6 goes in brackets).
    """
    trusted = _trusted(trusted_networks)
    params = effective_parameters(text)
    if _mynetworks_problem(params, trusted) is None:
        return text
    chain, name = [], "mynetworks"
    while name in params and (name := _single_reference(params[name].value) or "") in params \
            and name not in chain and name != "mynetworks":
        chain.append(name)
    everything = "\n".join(p.value for p in params.values()) + "\n" + master_cf
    target = chain[-1] if chain and all(_references(everything, n) == 1 for n in chain) else "mynetworks"
    return ensure_parameter(text, name=target, value=" ".join(trusted_networks))


def sasl_mechanisms(conf: str) -> str:
    """The ``mech_list`` of a Cyrus SASL application file (``/etc/postfix/sasl/smtpd.conf``), upper-cased and
    space-separated; "" when the file sets none (then every installed mechanism is offered)."""
    for line in conf.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "mech_list":
            return " ".join(value.replace(",", " ").upper().split())
    return ""


def _anonymous_only(mechanisms: str) -> bool:
    return bool(mechanisms.split()) and set(mechanisms.split()) == {"ANONYMOUS"}


def _sasl_on(values: Mapping[str, str]) -> bool:
    return values.get("smtpd_sasl_auth_enable", "no").strip().lower() in ("yes", "true")


def _auth_problem(params: Mapping[str, Parameter], mechanisms: str) -> str | None:
    """AUTH on, with ANONYMOUS its only mechanism: `noanonymous` alone would leave none, and smtpd ends every
    session right after the greeting (postconf(5) smtpd_sasl_security_options; Cyrus mech_list)."""
    if not _sasl_on(_values(params)) or not _anonymous_only(mechanisms):
        return None
    return (f"AUTH is on and its only mechanism is {mechanisms} (Cyrus mech_list): no client can really "
            "authenticate, and adding noanonymous alone would leave no mechanism, which makes smtpd end every "
            "session; AUTH is turned off instead (smtpd_sasl_auth_enable = no)")


def ensure_noanonymous(text: str, *, mechanisms: str = "") -> str:
    """Add ``noanonymous`` to explicitly set SASL security options that lack it; unset options stay unset.

    ``mechanisms`` is the SASL ``mech_list`` (`sasl_mechanisms`; "" = not known, other mechanisms assumed).
    When AUTH is on and ANONYMOUS is its only mechanism, AUTH is turned off as well, since a service
    left with no mechanism fails every session.
    """
    if _auth_problem(effective_parameters(text), mechanisms) is not None:
        text = ensure_parameter(text, name="smtpd_sasl_auth_enable", value="no")
    for name in SASL_OPTIONS:
        params = effective_parameters(text)
        current = params.get(name)
        if current is not None and _sasl_problem(name, current.value, _values(params)) is not None:
            options = [*split_list(current.value), "noanonymous"]
            text = ensure_parameter(text, name=name, value=", ".join(options))
    return text


def require_auth_all(text: str) -> str:
    """Make ``smtpd_relay_restrictions`` refuse every unauthenticated outsider (``... , reject``).

    A list that already does so (for instance ``permit_sasl_authenticated, reject``) stays as is.
    """
    if _relay_problem(effective_parameters(text), "auth-all") is None:
        return text
    return ensure_parameter(text, name="smtpd_relay_restrictions", value=AUTH_ALL_RELAY)


def remove_unsafe_overrides(text: str, *, trusted_networks: list[str], main_cf: str = "") -> str:
    """Remove the ``-o`` overrides of smtpd services that reopen relay or anonymous AUTH.

    ``$name`` in an override is resolved against ``main_cf`` first; safe overrides and other services stay.
    """
    trusted = _trusted(trusted_networks)
    values = postfix_effective(main_cf)
    unsafe = [override for service in parse_services(text, strict=True) if service.is_smtpd
              for override in service.overrides if _override_problem(override, values, trusted) is not None]
    return remove_overrides(text, unsafe) if unsafe else text


def audit(main_cf: str, master_cf: str, *, trusted_networks: list[str],
          policy: str = "relay-auth", mechanisms: str = "") -> list[Finding]:
    """Explain, line by line, what in main.cf and master.cf exposes the server (main.cf findings first).
    ``mechanisms``: the SASL mech_list, as `ensure_noanonymous` takes it."""
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}", key="policy")
    trusted = _trusted(trusted_networks)
    params = effective_parameters(main_cf)
    values = _values(params)
    findings: list[Finding] = []

    def main(code: str, name: str, detail: str | None) -> None:
        if detail is not None:
            parameter = params.get(name)
            findings.append(Finding(code, detail, "config", "main.cf", parameter.line if parameter else None, name))

    main("open_relay", "smtpd_relay_restrictions", _relay_problem(params, policy))
    main("open_relay", "smtpd_recipient_restrictions", _recipient_problem(params))
    networks = holder(params, "mynetworks") if "mynetworks" in params or "mynetworks_style" not in params \
        else "mynetworks_style"   # the line that makes the networks what they are
    main("open_relay", networks, _mynetworks_problem(params, trusted))
    main("anonymous_auth", "smtpd_sasl_auth_enable", _auth_problem(params, mechanisms))
    inbound = _inbound_problem(params) if policy == "relay-auth" else None
    if inbound is not None:
        main("inbound_refused", *inbound)
    services = [service for service in parse_services(master_cf, strict=True) if service.is_smtpd]
    sasl_main = _sasl_on(values)
    sasl_services = [service.label for service in services for override in service.overrides
                     if override.name == "smtpd_sasl_auth_enable"
                     and override.value.strip().lower() in ("yes", "true")]
    for name in SASL_OPTIONS:
        if name in params:
            problem = _sasl_problem(name, params[name].value, values)
            if problem is not None and not sasl_main and sasl_services:
                problem += "; SASL is off in main.cf but on for " + ", ".join(sasl_services)
            elif problem is not None and not sasl_main:
                problem += "; SASL is off today (smtpd_sasl_auth_enable), so this matters once it is on"
            main("anonymous_auth", name, problem)
    relay_domains = params.get("relay_domains")
    if relay_domains is not None and split_list(relay_domains.value) not in ([], ["$mydestination"],
                                                                             ["${mydestination}"]):
        main("relay_domains", "relay_domains",
             f"relay_domains = {relay_domains.value!r}: Postfix relays mail for every listed domain for any "
             "client, so list only domains this host is truly a backup MX for")
    if "compatibility_level" not in params:
        main("compatibility_level_missing", "compatibility_level",
             "compatibility_level is not set, so Postfix uses level-0 defaults: mynetworks_style = subnet "
             "(the whole LAN may relay), relay_domains = $mydestination, empty smtpd_relay_restrictions")
    for name, parameter in params.items():
        if name in NONEXISTENT:
            main("nonexistent_parameter", name,
                 f"{name} = {parameter.value!r} does nothing: Postfix has no such parameter "
                 f"(the real one is {NONEXISTENT[name]})")
    return findings + _master_findings(services, values, trusted)


def _master_findings(services: Sequence[Service], values: Mapping[str, str],
                     trusted: Sequence[Network]) -> list[Finding]:
    """The findings of master.cf: each smtpd service's `-o` overrides that reopen relay or anonymous AUTH,
    or name a parameter Postfix does not have."""
    findings = []
    for service in services:
        for override in service.overrides:
            found = _override_problem(override, values, trusted)
            if found is None and override.name in NONEXISTENT:
                found = ("nonexistent_parameter",
                         f"Postfix has no such parameter (the real one is {NONEXISTENT[override.name]})")
            if found is not None:
                findings.append(Finding(found[0], f"{service.label}: -o {override.name}={override.value}: {found[1]}",
                                        "config", "master.cf", override.line, override.name))
    return findings
