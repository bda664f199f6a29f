"""Sendmail: what in sendmail.mc and the access map lets outsiders relay or log in anonymously; the edits that stop it.

Every transform is ``fn(text, **params) -> str`` and guarantees:

- it is pure and idempotent: ``f(f(x)) == f(x)``;
- it returns ``text`` itself (the same object) when nothing needs changing;
- comments, blank lines, order, line endings and the final-newline state stay byte for byte. In sendmail.mc a
  statement is disabled by prefixing each of its lines with ``dnl # remediate: `` (m4 drops a ``dnl`` line
  unread; a ``#`` line would still be expanded once cf.m4 is included), a word is cut out of a quoted list,
  or one ``define`` line is added; in the access map a line is prefixed with ``# remediate: ``.

Transforms: ``remove_promiscuous_relay``, ``remove_anonymous_auth`` and ``ensure_auth_options`` take
sendmail.mc; ``restrict_connect_relay`` takes the access map source. ``To:`` RELAY entries are never changed
(a real backup MX needs them); :func:`audit` explains them.

The transforms and :func:`audit` share one set of judgements (the ``_`` functions below): every
``open_relay`` and ``anonymous_auth`` finding names something a transform changes, and after the transforms
none remains. Bad arguments raise :class:`~remediate.errors.ConfigError`.

Not seen here: statements in included files (Debian's ``/etc/mail/sasl/sasl.m4``), inside ``ifdef``/``ifelse``
arguments, raw LOCAL_CONFIG lines, and /etc/mail/relay-domains (class R).

Sources: mail-domain.md section 5 (verified with m4 and ``sendmail -bt`` on Debian 12), cf/README of
Sendmail 8.17 (Debian's sendmail-doc ``cf.README``), and the Debian 12 files in tests/golden/sendmail/.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from remediate.errors import ConfigError
from remediate.model import Finding
from remediate.mta.sendmail import syntax
from remediate.mta.sendmail.syntax import SPACE, Argument, Entry, Macro, Network, key_network, parse_access, parse_mc

POLICIES = ("relay-auth", "auth-all")
FILES = MappingProxyType({"mc": "sendmail.mc", "access": "access"})
#: FEATUREs that let an outsider relay to any domain; remove_promiscuous_relay disables them
OPEN_RELAY_FEATURES: Mapping[str, str] = MappingProxyType({
    # cf/README FEATURES; mail-domain.md 5.1 (verified: every foreign RCPT accepted; m4 warns "open relay")
    "promiscuous_relay": "relays from any client to any domain",
    # cf/README ANTI-SPAM; mail-domain.md 5.1 (m4 warns "may cause your system to act as open relay")
    "relay_local_from": "relays for any client whose MAIL FROM names a local domain, which anyone can forge",
    "relay_mail_from": "relays for any client whose MAIL FROM is listed RELAY in the access map, which anyone "
                       "can forge",
    # cf/README ANTI-SPAM ("can allow spammers to relay"); mail-domain.md 5.1 (user%host@local)
    "loose_relay_check": "accepts %-hack recipients (user%foreign.example@this-host) as local and relays them",
})
#: FEATUREs that relay only to domains naming this host; reported as relay_domains and kept (cf/README
#: ANTI-SPAM: an outsider can point a domain of theirs here, but cannot reach arbitrary domains)
MX_RELAY_FEATURES = frozenset({"relay_based_on_MX"})
ANONYMOUS = "ANONYMOUS"
#: the define ensure_auth_options adds: only `y` (SASL_SEC_NOANONYMOUS, mail-domain.md 5.2); see its docstring
NEW_AUTH_OPTIONS = "define(`confAUTH_OPTIONS', `y')dnl"
SMTP_PORTS = frozenset({"smtp", "25"})
_WORD = re.compile(r"[^\s,]+")
_TRUST_NOTE = "mail-domain.md 5.2, verified: ANONYMOUS in TrustAuthMech makes check_rcpt return $# RELAY"


def _unspecified(address: str) -> bool:
    """True for a DaemonPortOptions Addr= that binds no particular address (absent, empty, 0.0.0.0, ::)."""
    try:
        return not address or ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _defines(macros: Sequence[Macro], name: str) -> list[Macro]:
    """The ``define``/``undefine`` calls of ``name``, in file order."""
    return [macro for macro in macros if macro.name in ("define", "undefine") and macro.literal(0) == name]


def _feature(macro: Macro) -> str | None:
    return macro.literal(0) if macro.name == "FEATURE" else None


def _relay_features(macros: Sequence[Macro]) -> list[Macro]:
    return [macro for macro in macros if _feature(macro) in OPEN_RELAY_FEATURES]


def _has_anonymous(argument: Argument) -> bool:
    return ANONYMOUS in (word.upper() for word in argument.words())


def _anonymous_trust(macros: Sequence[Macro]) -> list[Macro]:
    return [macro for macro in macros if macro.name == "TRUST_AUTH_MECH" and _has_anonymous(macro.arg(0))]


def _anonymous_mechanisms(macros: Sequence[Macro]) -> list[Macro]:
    return [macro for macro in _defines(macros, "confAUTH_MECHANISMS")
            if macro.name == "define" and _has_anonymous(macro.arg(1))]


def _anonymous_cuts(argument: Argument) -> list[tuple[int, int]]:
    """Spans that remove each ANONYMOUS word and the blanks (or comma) before it, else after it."""
    spans = []
    for piece in argument.pieces:
        for word in _WORD.finditer(piece.text):
            if word.group().upper() != ANONYMOUS:
                continue
            start, end = word.span()
            before = len(piece.text[:start]) - len(piece.text[:start].rstrip(" \t,"))
            if before and start - before > 0:
                start -= before
            else:
                end += len(piece.text[end:]) - len(piece.text[end:].lstrip(" \t,"))
            spans.append((piece.start + start, piece.start + end))
    return spans


@dataclass(frozen=True, slots=True)
class AuthOptions:
    """What sendmail.mc says about SMTP AUTH: whether it is configured, whether ``y`` is ensured, the last
    ``define``/``undefine`` of confAUTH_OPTIONS, and whether the mechanism list can be judged at all."""

    configured: bool
    has_y: bool
    last: Macro | None
    mechanisms: Macro | None
    opaque_mechanisms: bool

    @property
    def needs_y(self) -> bool:
        return self.configured and not self.has_y


def auth_options(macros: Sequence[Macro]) -> AuthOptions:
    """Read AUTH from the macros (the last define of an option is the one m4 leaves for proto.m4)."""
    options = _defines(macros, "confAUTH_OPTIONS")
    last = options[-1] if options else None
    value = last.arg(1) if last is not None and last.name == "define" else None
    mechanisms = [macro for macro in _defines(macros, "confAUTH_MECHANISMS") if macro.name == "define"]
    trust = [macro for macro in macros if macro.name == "TRUST_AUTH_MECH"]
    final = mechanisms[-1] if mechanisms else None
    opaque = final is not None and (not final.has(1) or final.arg(1).opaque)
    return AuthOptions(bool(mechanisms or trust), value is not None and "y" in value.words(), last,
                       final, opaque)


def _trusted(trusted_networks: Sequence[str]) -> list[Network]:
    if isinstance(trusted_networks, str) or not isinstance(trusted_networks, Sequence):
        raise ConfigError("expected a list of networks such as ['127.0.0.0/8', '::1/128']",
                          key="trusted_networks")
    networks = []
    for entry in trusted_networks:
        try:
            if not isinstance(entry, str) or "[" in entry:
                raise ValueError(entry)
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{entry!r} is not a network in CIDR notation, like 10.0.0.0/8 or ::1/128 "
                              "(IPv6 without brackets)", key="trusted_networks") from None
    return networks


def _inside(network: Network, trusted: Network) -> bool:
    return network.version == trusted.version and int(trusted.network_address) <= int(network.network_address) \
        and int(network.broadcast_address) <= int(trusted.broadcast_address)


def _open_connect(entry: Entry, trusted: Sequence[Network]) -> str | None:
    """Why a ``Connect:`` (or untagged address) RELAY entry lets clients outside the trusted networks relay.

    The value must be RELAY alone (any case): makemap keeps the rest of the line, so ``RELAY # lan`` is
    another value, which Sendmail's rules do not read as RELAY.
    """
    if entry.tag not in ("connect", "") or entry.value.upper() != "RELAY":
        return None
    is_address, network = key_network(entry.name)
    if not is_address:
        return None
    if network is None:
        return (f"{entry.key} RELAY cannot be read as an address or network, so it cannot be shown to lie "
                "inside the trusted networks")
    if any(_inside(network, t) for t in trusted):
        return None
    return (f"{entry.key} RELAY lets every client in {network} relay, "
            "and that is not inside the trusted networks")


def _relay_domain(entry: Entry) -> str | None:
    """The domain a ``To:`` (or untagged name) RELAY entry relays to for any client; None otherwise."""
    if entry.value.upper() != "RELAY" or entry.tag not in ("to", ""):
        return None
    if entry.tag == "" and key_network(entry.name)[0]:
        return None
    domain = entry.name.rsplit("@", 1)[-1].strip("[]").lower()
    return domain or None


# ---------------------------------------------------------------------------------------------------------
# Transforms

def _text(text: str) -> str:
    if not isinstance(text, str):
        raise ConfigError(f"expected the file's text, got {type(text).__name__}", key="text")
    return text


def remove_promiscuous_relay(text: str) -> str:
    """Disable every FEATURE of :data:`OPEN_RELAY_FEATURES` (its lines become ``dnl # remediate: ...``)."""
    targets = _relay_features(parse_mc(_text(text)))
    return syntax.disable(text, targets) if targets else text


def remove_anonymous_auth(text: str) -> str:
    """Remove ANONYMOUS from every ``confAUTH_MECHANISMS`` define and ``TRUST_AUTH_MECH`` call.

    Other mechanisms, quoting and spacing stay. A TRUST_AUTH_MECH left with no mechanism is disabled (as
    in :func:`remove_promiscuous_relay`); a confAUTH_MECHANISMS left empty stays, empty (m4 then writes
    ``O AuthMechanisms`` with no value, so no mechanism is offered, rather than bringing back defaults).
    """
    macros = parse_mc(_text(text))
    empty = [macro for macro in _anonymous_trust(macros) if not macro.arg(0).opaque
             and all(word.upper() == ANONYMOUS for word in macro.arg(0).words())]
    out = syntax.disable(text, empty) if empty else text
    macros = parse_mc(out) if empty else macros
    spans = [span for macro in _anonymous_trust(macros) for span in _anonymous_cuts(macro.arg(0))]
    spans += [span for macro in _anonymous_mechanisms(macros) for span in _anonymous_cuts(macro.arg(1))]
    return syntax.cut(out, spans) if spans else out


def _add_flag(text: str, define: Macro) -> str:
    """Add ``y`` to the value of a confAUTH_OPTIONS define, inside its last quoted string when it has one."""
    value = define.arg(1)
    if not define.has(1):
        return syntax.insert_at(text, [(define.end - 1, ", `y'")])
    quoted = [piece for piece in value.pieces if piece.quoted]
    plain = [piece for piece in value.pieces if not piece.quoted and piece.text.strip(SPACE)]
    comma = "," in value.value and " " not in value.value.strip(SPACE)
    if quoted:
        piece = quoted[-1]
        blank = not piece.text or piece.text[-1] in " \t,"
        return syntax.insert_at(text, [(piece.end, ("" if blank else "," if comma else " ") + "y")])
    if plain and not value.opaque:
        piece = plain[-1]
        return syntax.insert_at(text, [(piece.start + len(piece.text.rstrip(SPACE)), ("," if comma else " ") + "y")])
    return syntax.insert_at(text, [(value.end, "` y'" if value.pieces or value.opaque else "`y'")])


def _next_line(text: str, starts: Sequence[int], macro: Macro) -> int | None:
    """The start of the line after ``macro`` when nothing but blanks or a ``dnl`` follows it on its line."""
    if macro.last_line + 1 >= len(starts) - 1 and not text.endswith("\n"):
        return None
    rest = text[macro.end:starts[macro.last_line + 1]].strip(SPACE)
    return starts[macro.last_line + 1] if not rest or re.match(r"dnl(?![A-Za-z0-9_])", rest) else None


def _insert_define(text: str, macros: Sequence[Macro], after: Macro | None) -> str:
    """Add :data:`NEW_AUTH_OPTIONS` on a line of its own, after ``after`` when given, else after the last AUTH
    statement when that comes before the first MAILER_DEFINITIONS or MAILER(, else before that one, else at
    the end. A place inside another statement's line is never used."""
    lines = syntax.split_lines(text)
    starts, eol = syntax.line_starts(lines), syntax.dominant_eol(lines)
    anchors = [m for m in macros if m.name == "MAILER_DEFINITIONS" or (m.name == "MAILER" and m.args is not None)]
    mechanisms = _defines(macros, "confAUTH_MECHANISMS")
    auth = [m for m in macros if m.name == "TRUST_AUTH_MECH" or m in mechanisms]
    if after is None and auth and (not anchors or auth[-1].end <= anchors[0].start):
        after = auth[-1]
    if after is not None and (offset := _next_line(text, starts, after)) is not None:
        return syntax.insert_at(text, [(offset, NEW_AUTH_OPTIONS + (lines[after.last_line].eol or eol))])
    later = [m for m in anchors if after is None or m.start >= after.end]
    if later:
        anchor, line = later[0], lines[later[0].first_line]
        blank = not text[starts[anchor.first_line]:anchor.start].strip(SPACE)
        return syntax.insert_at(text, [(starts[anchor.first_line] if blank else anchor.start,
                                 NEW_AUTH_OPTIONS + (line.eol or eol))])
    if not text:
        return NEW_AUTH_OPTIONS + eol
    return text + NEW_AUTH_OPTIONS + eol if text.endswith("\n") else text + eol + NEW_AUTH_OPTIONS


def ensure_auth_options(text: str) -> str:
    """Make ``confAUTH_OPTIONS`` hold ``y`` (SASL_SEC_NOANONYMOUS: Cyrus then offers no anonymous mechanism
    even if one is listed; mail-domain.md 5.2) wherever SMTP AUTH is configured (a confAUTH_MECHANISMS
    define or a TRUST_AUTH_MECH call). A file without AUTH stays as it is.

    ``y`` goes into the effective (last) define, inside its last quoted string. Without one, the line
    ``define(`confAUTH_OPTIONS', `y')dnl`` is added after a final ``undefine``, else right after the last
    AUTH statement when that comes before MAILER, else before the first MAILER_DEFINITIONS or MAILER( line,
    never inside another statement's line. cf/README puts local macro definitions after FEATUREs and before
    MAILER; no FEATURE reads confAUTH_OPTIONS, and proto.m4 (which writes ``O AuthOptions``) runs at the end
    through m4wrap, so any place before the end takes effect (checked with m4 over Debian's mc).

    Only ``y`` is added: ``A`` is a client-side flag and ``p`` refuses PLAIN/LOGIN without TLS, which would
    lock out clients that authenticate without TLS today (mail-domain.md 5.2 shows ``A p y`` as an example).
    """
    macros = parse_mc(_text(text))
    state = auth_options(macros)
    if not state.needs_y:
        return text
    if state.last is not None and state.last.name == "define":
        return _add_flag(text, state.last)
    return _insert_define(text, macros, state.last)


def restrict_connect_relay(text: str, *, trusted_networks: list[str]) -> str:
    """Comment out (``# remediate: ``) every ``Connect:`` or untagged address/network RELAY entry whose
    network is not inside ``trusted_networks`` (CIDR, IPv6 unbracketed). Name keys (``Connect:localhost``)
    and entries inside the trusted networks stay; so do ``To:`` entries.

    Raises ConfigError for a trusted network that is not CIDR notation.
    """
    trusted = _trusted(trusted_networks)
    indexes = [entry.index for entry in parse_access(_text(text)) if _open_connect(entry, trusted) is not None]
    return syntax.comment_out(text, indexes) if indexes else text


def served_domains(access_text: str) -> tuple[str, ...]:
    """The domains the access map relays to for anyone (``To:`` and untagged name RELAY entries), lower-cased,
    in file order, each once: a probe recipient in one of them proves nothing (mail-domain.md 8)."""
    found = (_relay_domain(entry) for entry in parse_access(_text(access_text)))
    return tuple(dict.fromkeys(domain for domain in found if domain))


# ---------------------------------------------------------------------------------------------------------
# Audit

Found = tuple[str, int | None, str, str]  # code, 1-based line, parameter, detail
_REACHABLE = "not a relay by itself, but reachable from every network this host is on"


def _daemon_findings(macros: Sequence[Macro]) -> list[Found]:
    """daemon_all_addresses: the MTA (port 25) listens on every address (cf/README, DaemonPortOptions)."""
    daemons = [macro for macro in macros if macro.name == "DAEMON_OPTIONS" and macro.args is not None]
    if not daemons:
        return [("daemon_all_addresses", None, "DAEMON_OPTIONS", "no DAEMON_OPTIONS, so Sendmail's default MTA "
                 f"daemon (Port=smtp) listens on every address (Debian's mc binds Addr=127.0.0.1); {_REACHABLE}")]
    found: list[Found] = []
    for macro in daemons:
        if (value := macro.literal(0)) is None:
            continue
        fields = {key.strip(SPACE).lower(): val.strip(SPACE) for key, _, val in
                  (field.partition("=") for field in value.split(","))}
        if fields.get("port", "smtp").lower() in SMTP_PORTS and _unspecified(fields.get("addr", "")):
            family = "IPv6" if fields.get("family", "inet").lower() == "inet6" else "IPv4"
            found.append(("daemon_all_addresses", macro.line, "DAEMON_OPTIONS", f"DAEMON_OPTIONS(`{value}') "
                          f"binds the MTA on port 25 to no address, so it listens on every {family} address; "
                          + _REACHABLE))
    return found


def _auth_findings(macros: Sequence[Macro]) -> list[Found]:
    found: list[Found] = [("open_relay", macro.line, "TRUST_AUTH_MECH", "TRUST_AUTH_MECH lists ANONYMOUS: a client "
                           f"that logs in anonymously may relay ({_TRUST_NOTE})") for macro in _anonymous_trust(macros)]
    found += [("anonymous_auth", macro.line, "confAUTH_MECHANISMS", "confAUTH_MECHANISMS lists ANONYMOUS, so AUTH "
               "ANONYMOUS is offered wherever Cyrus has the mechanism (mail-domain.md 5.2)")
              for macro in _anonymous_mechanisms(macros)]
    state = auth_options(macros)
    where = state.last or state.mechanisms
    line = where.line if where is not None else None
    if state.needs_y and state.opaque_mechanisms:
        found.append(("anonymous_auth", line, "confAUTH_OPTIONS", "confAUTH_MECHANISMS cannot be read here (it "
                      "expands a macro), so it may offer ANONYMOUS, and confAUTH_OPTIONS lacks y "
                      "(SASL_SEC_NOANONYMOUS), which would make Cyrus withhold it"))
    elif state.needs_y:
        found.append(("noanonymous_missing", line, "confAUTH_OPTIONS", "SMTP AUTH is configured and "
                      "confAUTH_OPTIONS lacks y (SASL_SEC_NOANONYMOUS), the flag that makes Cyrus withhold "
                      "ANONYMOUS even where a mechanism list names it (mail-domain.md 5.2)"))
    return found


def _mc_findings(macros: Sequence[Macro]) -> list[Found]:
    found: list[Found] = [("open_relay", macro.line, f"FEATURE(`{name}')", f"FEATURE(`{name}') "
                           f"{OPEN_RELAY_FEATURES[name]}") for macro in _relay_features(macros)
                          if (name := _feature(macro)) is not None]
    found += _auth_findings(macros)
    for macro in macros:
        if _feature(macro) in MX_RELAY_FEATURES:
            found.append(("relay_domains", macro.line, "FEATURE(`relay_based_on_MX')", "FEATURE(`relay_based_on_MX') "
                          "relays to every domain whose MX names this host, which anyone can arrange for a "
                          "domain of theirs; list the backup-MX domains instead"))
        elif macro.name == "RELAY_DOMAIN" and macro.args is not None:
            found.append(("relay_domains", macro.line, "RELAY_DOMAIN", f"RELAY_DOMAIN(`{macro.arg(0).value}') "
                          "adds to class R: Sendmail relays to those domains, and from clients whose address "
                          "starts with them, for anyone; list only domains this host is a backup MX for"))
    return found + _daemon_findings(macros)


def _access_findings(text: str, trusted: Sequence[Network], access_db: bool | None) -> list[Found]:
    note = ("; FEATURE(`access_db') is not in sendmail.mc, so the map is not read today, but this matters "
            "once it is") if access_db is False else ""
    found: list[Found] = []
    for entry in parse_access(text):
        if (reason := _open_connect(entry, trusted)) is not None:
            found.append(("open_relay", entry.line, entry.key, reason + note))
        if (domain := _relay_domain(entry)) is not None:
            found.append(("relay_domains", entry.line, entry.key, f"{entry.key} RELAY: Sendmail relays mail for "
                          f"{domain} from any client, so list only domains this host is truly a backup MX for"
                          + note))
    return found


def audit(texts: dict[str, str], paths: dict[str, str], *, trusted_networks: list[str],
          policy: str = "relay-auth") -> list[Finding]:
    """Explain, line by line, what in sendmail.mc (``texts["mc"]``) and the access map source
    (``texts["access"]``) exposes the server; either may be absent. Findings (all ``source="config"``, each
    naming ``paths[name]``, the 1-based line and the FEATURE/define/key):

    ``open_relay`` (relay-opening FEATURE, Connect RELAY outside the trusted networks, ANONYMOUS in
    TRUST_AUTH_MECH), ``anonymous_auth`` (ANONYMOUS in confAUTH_MECHANISMS, or an unreadable mechanism list
    without ``y``), ``noanonymous_missing`` (AUTH configured without ``y``: hardening, not an exposure),
    ``relay_domains`` (To: RELAY, RELAY_DOMAIN, relay_based_on_MX: list only backup-MX domains) and
    ``daemon_all_addresses`` (the MTA listens on every address: not a relay, but reachable).

    Both policies are judged alike for now. Raises ConfigError for an unknown policy, file name or trusted
    network.
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}", key="policy")
    if unknown := sorted(set(texts) - set(FILES)):
        raise ConfigError(f"unknown file names {unknown}; expected {', '.join(FILES)}", key="texts")
    trusted = _trusted(trusted_networks)
    macros = parse_mc(_text(texts["mc"])) if "mc" in texts else None
    found = [(paths.get("mc", FILES["mc"]), item) for item in _mc_findings(macros or [])] if macros is not None else []
    if "access" in texts:
        access_db = None if macros is None else any(_feature(macro) == "access_db" for macro in macros)
        found += [(paths.get("access", FILES["access"]), item)
                  for item in _access_findings(_text(texts["access"]), trusted, access_db)]
    return [Finding(code, detail, "config", path, line, parameter) for path, (code, line, parameter, detail) in found]
