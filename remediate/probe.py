"""The SMTP relay / anonymous-AUTH probe: what an outside client can get an MTA to accept.

Two ways in, one result type:

- `probe(address, port)` talks to a live MTA from outside: EHLO (and EHLO again after STARTTLS), the two-step
  `AUTH ANONYMOUS` when advertised, nmap's 16 relay forms, three tests scanners miss (a sender forged in
  one of the host's own domains; `postmaster@` and `abuse@` at the foreign domain: `extra_forms`), and a
  local-delivery check.
- `simulate(stream)` runs one session over an open stream to an MTA's own test session, started by its
  driver against a candidate configuration (with `xclient_addr`, XCLIENT makes the MTA see an outside
  client; without it, the driver's session already poses as one), which is how a candidate config is tried
  before it goes live.

`judge(result)` (in `remediate.verdict`) turns a `ProbeResult` into a `Verdict`. The wire (`SmtpSession`,
`Reply`) and the result types (`ProbeResult`, `RelayAttempt`) live in `remediate.smtp`.

Guarantees: DATA and BDAT are never sent (`SmtpSession.command` refuses them), every transaction is ended by
RSET or QUIT, every read returns or fails within `timeout`, and nothing here logs: everything is returned.
Session failures raise `ProbeError` subclasses inside; `probe`/`simulate` record them in `ProbeResult.errors`.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from remediate.errors import ProbeDropped, ProbeError
from remediate.smtp import (
    ABUSE,
    OWN_SENDER,
    POSTMASTER,
    Capabilities,
    Connect,
    ProbeResult,
    RelayAttempt,
    Reply,
    SmtpSession,
    Stream,
    check_names,
    default_connect,
    parse_ehlo,
    scanner_tls_context,
    server_name,
)

SENDER, RECIPIENT = "antispam", "relaytest"  # nmap's F and T
HELO = "probe.remediate.example"  # the name the probe (and every simulated session) greets with
#: the local-delivery check sends as the null sender: every MTA must take mail from <> for postmaster
#: (RFC 5321 4.5.1, 6.1), and it needs no DNS (a named sender domain that does not resolve gets a 4xx
#: from Sendmail and Exim with sender verification, which would say nothing about inbound mail)
LOCAL_SENDER = ""
_MAX_STRIKES = 2


_FORMS = (  # nmap smtp-open-relay.nse, in its order: (number, MAIL FROM, RCPT TO)
    (1, "", "{T}@{D}"), (2, "{F}@{D}", "{T}@{D}"), (3, "{F}@{SRV}", "{T}@{D}"),
    (4, "{F}@[{IP}]", "{T}@{D}"), (5, "{F}@[{IP}]", "{T}%{D}@[{IP}]"), (6, "{F}@[{IP}]", "{T}%{D}@{SRV}"),
    (7, "{F}@[{IP}]", '"{T}@{D}"'), (8, "{F}@[{IP}]", '"{T}%{D}"'), (9, "{F}@[{IP}]", "{T}@{D}@[{IP}]"),
    (10, "{F}@[{IP}]", '"{T}@{D}"@[{IP}]'), (11, "{F}@[{IP}]", "{T}@{D}@{SRV}"),
    (12, "{F}@[{IP}]", "@[{IP}]:{T}@{D}"), (13, "{F}@[{IP}]", "@{SRV}:{T}@{D}"),
    (14, "{F}@[{IP}]", "{D}!{T}"), (15, "{F}@[{IP}]", "{D}!{T}@[{IP}]"), (16, "{F}@[{IP}]", "{D}!{T}@{SRV}"),
)


_MAX_OWN = 3  # own-domain senders tried at most


def extra_forms(domain: str, own_domains: Sequence[str] = ()) -> tuple[tuple[int, str, str], ...]:
    """The tests after nmap's 16: form 17 once per own domain (at most three), then 18 and 19."""
    own = [(OWN_SENDER, f"{SENDER}@{d}", f"{RECIPIENT}@{domain}") for d in dict.fromkeys(own_domains)][:_MAX_OWN]
    return (*own, (POSTMASTER, f"{SENDER}@{domain}", f"postmaster@{domain}"),
            (ABUSE, f"{SENDER}@{domain}", f"abuse@{domain}"))


def relay_forms(domain: str, srv: str, ip: str | None) -> tuple[tuple[int, str, str], ...]:
    """nmap's 16 (form, MAIL FROM, RCPT TO) tests. Without `ip` (a simulation has no target address) the forms
    that route through `[IP]` are left out and `F@[IP]` senders become `F@SRV`."""
    literal = None if ip is None else ("IPv6:" + ip if ":" in ip else ip)
    forms = []
    for number, mail, rcpt in _FORMS:
        if literal is None and (number == 4 or "{IP}" in rcpt):
            continue
        mail = mail if literal is not None else mail.replace("[{IP}]", "{SRV}")
        values = {"F": SENDER, "T": RECIPIENT, "D": domain, "SRV": srv, "IP": literal}
        forms.append((number, mail.format(**values), rcpt.format(**values)))
    return tuple(forms)


def _hello(session: SmtpSession, helo: str) -> Reply:
    reply = session.command(f"EHLO {helo}")
    if reply.klass == 5:
        reply = session.command(f"HELO {helo}")
    if reply.klass != 2:
        raise ProbeError(f"EHLO and HELO refused: {reply}")
    return reply


def _try_relay(session: SmtpSession, form: int, mail_from: str, rcpt_to: str) -> RelayAttempt:
    """MAIL and (if MAIL got 2xx) RCPT; a drop, timeout, garbage or 421 marks the attempt `dropped`."""
    mail = rcpt = None
    with contextlib.suppress(ProbeError):  # the session is `broken` afterwards
        mail = session.command(f"MAIL FROM:<{mail_from}>")
        if mail.klass == 2:
            rcpt = session.command(f"RCPT TO:<{rcpt_to}>")
    return RelayAttempt(mail_from, rcpt_to, mail, rcpt, session.broken, form)


@dataclass(slots=True)
class _Opened:
    session: SmtpSession | None
    banner: Reply | None = None
    ehlo: Reply | None = None
    error: str | None = None
    connected: bool = False   # the TCP connection was accepted


def _open(connect: Connect, address: str, port: int, helo: str, timeout: float,
          tls: ssl.SSLContext | None = None) -> _Opened:
    """Connect, read the banner, EHLO (and STARTTLS + EHLO when `tls`); never raises, reports `error`."""
    try:
        stream = connect(address, port, timeout)
    except OSError as exc:
        return _Opened(None, error=f"cannot connect to {address}:{port}: {exc}")
    session, opened = SmtpSession(stream, timeout=timeout), _Opened(None, connected=True)
    try:
        opened.banner = session.read_reply()
        if opened.banner.klass != 2:
            raise ProbeError(f"server refused the session: {opened.banner}")
        opened.ehlo = _hello(session, helo)
        if tls is not None:
            reply = session.starttls(tls)
            if reply.code != 220:
                raise ProbeError(f"STARTTLS refused: {reply}")
            opened.ehlo = _hello(session, helo)
    except ProbeError as exc:
        session.quit()
        opened.error = str(exc)
        return opened
    opened.session = session
    return opened


_ROTATE_AFTER = 6  # relay attempts per session


class _Link:
    """The plaintext relay session, reopened after a drop; gives up after `_MAX_STRIKES` failures in a row."""

    def __init__(self, opener: Callable[[], _Opened]) -> None:
        self._opener = opener
        self.session: SmtpSession | None = None
        self.first: _Opened | None = None
        self.errors: list[str] = []
        self.strikes = self.opens = self.used = 0
        self.connected = False

    @property
    def alive(self) -> bool:
        return self.strikes < _MAX_STRIKES

    def ensure(self) -> SmtpSession | None:
        while self.session is None and self.alive:
            opened = self._opener()
            self.opens += 1
            self.connected |= opened.connected
            self.first = self.first if self.first and self.first.session else opened
            self.session = opened.session
            if opened.error:
                self._strike(opened.error)
        return self.session

    def attempt(self, form: int, mail_from: str, rcpt_to: str) -> RelayAttempt:
        """One relay attempt, retried once on a fresh session if it was dropped; RSET after it."""
        attempt = RelayAttempt(mail_from, rcpt_to, None, None, True, form)
        for _ in range(2):
            if (session := self.ensure()) is None:
                break
            attempt = _try_relay(session, form, mail_from, rcpt_to)
            if not attempt.dropped:
                self.strikes = 0
                self.used += 1
                with contextlib.suppress(ProbeError):
                    session.rset()
                # e.g. Exim's farewell after 3 syntax errors; reopened when needed. Sessions are also
                # rotated before an MTA's error tarpit starts (one MTA we know sleeps 1 s per error past the tenth).
                if session.broken or self.used % _ROTATE_AFTER == 0:
                    self.close()
                return attempt
            self.close()
            self._strike(f"form {form}: connection dropped during {attempt}")
        return attempt

    def close(self) -> None:
        if self.session is not None:
            self.session.quit()
            self.session = None

    def _strike(self, error: str) -> None:
        self.strikes += 1
        if not self.alive:
            self.errors.append(f"{error}; giving up after {self.strikes} failures in a row")


def _anonymous(session: SmtpSession, helo: str, domain: str) -> tuple[Reply, RelayAttempt | None]:
    """AUTH ANONYMOUS, then (after a 235) form 2 as that anonymous client. Raises ProbeError."""
    reply = session.auth_anonymous(f"probe@{helo}")
    if reply.code != 235:
        return reply, None
    return reply, _try_relay(session, 2, f"{SENDER}@{domain}", f"{RECIPIENT}@{domain}")


def _anonymous_session(opened: _Opened, helo: str, domain: str, errors: list[str]
                       ) -> tuple[Reply | None, RelayAttempt | None]:
    """`_anonymous` in a session of its own, which it then ends; failures land in `errors`."""
    if opened.session is None:
        errors.append(f"AUTH ANONYMOUS session: {opened.error}")
        return None, None
    try:
        return _anonymous(opened.session, helo, domain)
    except ProbeError as exc:
        errors.append(f"AUTH ANONYMOUS: {exc}")
        return None, None
    finally:
        opened.session.quit()


def probe(address: str, port: int = 25, *, probe_domain: str = "relaytest.example.net",
          local_domain: str | None = None, own_domains: Sequence[str] | None = None, helo: str = HELO,
          timeout: float = 10.0, source_address: str | None = None, tls: bool = True,
          connect: Connect | None = None) -> ProbeResult:
    """Probe a live MTA from here. Never raises for network trouble (it lands in `errors`); raises ValueError
    for a malformed domain or HELO name. Runs nmap's 16 relay forms and `extra_forms` (own-domain senders:
    `own_domains`, default `local_domain`), reconnecting after drops or 421s."""
    check_names(probe_domain=probe_domain, local_domain=local_domain, helo=helo)
    own = _own(own_domains, local_domain)
    connect = connect or default_connect(source_address)

    def opener(context: ssl.SSLContext | None = None) -> _Opened:
        return _open(connect, address, port, helo, timeout, context)

    link = _Link(opener)
    session = link.ensure()
    first = link.first
    if session is None or first is None or first.ehlo is None:
        return ProbeResult(address, port, first.banner if first else None, source_address,
                           errors=tuple(link.errors), connected=link.connected)
    caps = parse_ehlo(first.ehlo)
    srv = server_name(first.banner, caps, address) if first.banner else address
    source, ip = _endpoint(session.stream, "getsockname"), _endpoint(session.stream, "getpeername")
    attempts = []
    forms = relay_forms(probe_domain, srv, ip or address) + extra_forms(probe_domain, own)
    for form, mail_from, rcpt_to in forms:
        if not link.alive:
            break
        attempts.append(link.attempt(form, mail_from, rcpt_to))
    local = None
    if local_domain:  # recorded as dropped if the link gave up
        local = link.attempt(0, LOCAL_SENDER, f"postmaster@{local_domain}")
    link.close()
    errors = list(link.errors)
    if len(attempts) < len(forms):
        errors.append(f"only {len(attempts)} of {len(forms)} relay tests were tried")

    tls_auth = anonymous = anon_relay = None
    if tls and caps.starttls:
        opened = opener(scanner_tls_context())
        if opened.session is None or opened.ehlo is None:
            errors.append(f"STARTTLS session: {opened.error}")
        else:
            tls_auth = parse_ehlo(opened.ehlo).auth
            if "ANONYMOUS" in tls_auth and "ANONYMOUS" not in caps.auth:  # only reachable inside TLS
                anonymous, anon_relay = _anonymous_session(opened, helo, probe_domain, errors)
            opened.session.quit()
    if "ANONYMOUS" in caps.auth:
        anonymous, anon_relay = _anonymous_session(opener(), helo, probe_domain, errors)
    return ProbeResult(address, port, first.banner, source or source_address, caps.auth, caps.starttls,
                       tls_auth, anonymous, tuple(attempts), local, tuple(errors), anon_relay,
                       max(0, link.opens - 1), first.ehlo, connected=True)


def _own(own_domains: Sequence[str] | None, local_domain: str | None) -> tuple[str, ...]:
    """The domains to forge a sender in: those given, else the local domain. ValueError for a malformed one."""
    own = tuple(own_domains) if own_domains is not None else (local_domain,) if local_domain else ()
    check_names(**{f"own_domains[{i}]": d for i, d in enumerate(own)})
    return own


def _endpoint(stream: Stream, method: str) -> str | None:
    try:
        return str(getattr(stream, method)()[0])
    except (AttributeError, OSError, TypeError, IndexError):
        return None


def simulate(stream: Stream, *, xclient_addr: str | None = "203.0.113.9",
             probe_domain: str = "relaytest.example.net", local_domain: str | None = None,
             own_domains: Sequence[str] | None = None, helo: str = HELO, timeout: float = 10.0) -> ProbeResult:
    """One session over `stream` to an MTA's test session against a candidate configuration.

    With `xclient_addr`, the session poses as that outside address via XCLIENT and the relay forms run
    only after XCLIENT was accepted (otherwise the client is localhost, which proves nothing); without
    it, the driver started a session that already sees an outside client. The forms run before AUTH
    ANONYMOUS so an accepted login cannot colour them. A drop ends the session with an error; there is
    no reconnect. No STARTTLS (the stream is a pipe): `tls_auth` stays None. The tests are the probe's
    (`relay_forms` without the `[IP]` forms, then `extra_forms`).
    """
    check_names(probe_domain=probe_domain, local_domain=local_domain, helo=helo)
    own = _own(own_domains, local_domain)
    session, errors = SmtpSession(stream, timeout=timeout), []
    banner = ehlo = anonymous = anon_relay = local = None
    caps = Capabilities((), False, False, None)
    attempts: list[RelayAttempt] = []
    try:
        banner = session.read_reply()
        if banner.klass != 2:
            raise ProbeError(f"server refused the session: {banner}")
        ehlo = _hello(session, helo)
        caps = parse_ehlo(ehlo)
        if xclient_addr is not None:
            if not caps.xclient:
                raise ProbeError("XCLIENT is not offered, so the session counts as localhost; relay not tested")
            reply = session.command(f"XCLIENT ADDR={xclient_addr} NAME=[UNAVAILABLE]")
            if reply.code != 220:
                raise ProbeError(f"XCLIENT refused ({reply}); relay not tested from a simulated outside client")
            ehlo = _hello(session, helo)
            caps = parse_ehlo(ehlo)
        srv = server_name(banner, caps, "localhost")
        for form, mail_from, rcpt_to in relay_forms(probe_domain, srv, None) + extra_forms(probe_domain, own):
            attempts.append(_try_relay(session, form, mail_from, rcpt_to))
            if attempts[-1].dropped:
                raise ProbeDropped(f"form {form}: connection dropped during {attempts[-1]}")
            session.rset()
        if local_domain:
            local = _try_relay(session, 0, LOCAL_SENDER, f"postmaster@{local_domain}")
            if local.dropped:
                raise ProbeDropped(f"local check dropped during {local}")
            session.rset()
        if "ANONYMOUS" in caps.auth:
            anonymous, anon_relay = _anonymous(session, helo, probe_domain)
    except ProbeError as exc:
        errors.append(str(exc))
    finally:
        session.quit()
    return ProbeResult("simulation", 0, banner, xclient_addr, caps.auth, caps.starttls, None, anonymous,
                       tuple(attempts), local, tuple(errors), anon_relay, 0, ehlo, connected=True)
