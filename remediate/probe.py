"""The SMTP relay / anonymous-AUTH probe and its verdicts.

Two ways in, one result type:

- `probe(address, port)` talks to a live MTA from outside: EHLO (and EHLO again after STARTTLS), the two-step
  `AUTH ANONYMOUS` when advertised, nmap's 16 relay forms, and a local-delivery check.
- `simulate(stream)` runs one session over an open stream to Postfix `smtpd -S` (XCLIENT makes it see an
  outside client), which is how a candidate config is tried before it goes live.

`judge(result)` turns a `ProbeResult` into a `Verdict` from reply *classes*, never reply strings.

Guarantees: DATA and BDAT are never sent (`SmtpSession.command` refuses them), every transaction is ended by
RSET or QUIT, every read returns or fails within `timeout`, and nothing here logs: everything is returned.
Session failures raise `ProbeError` subclasses inside; `probe`/`simulate` record them in `ProbeResult.errors`.

    RemediateError
     └── ProbeError            connect, TLS or banner failure
          ├── ProbeDropped     the server closed the connection (or a send failed)
          ├── ProbeTimeout     no complete reply within the timeout
          └── ProbeProtocolError  a reply that is not SMTP
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from remediate.errors import RemediateError

OPEN_RELAY = "open_relay"
ANONYMOUS_AUTH = "anonymous_auth"
SENDER, RECIPIENT = "antispam", "relaytest"  # nmap's F and T
_MAX_LINE, _MAX_LINES, _MAX_STRIKES = 4096, 64, 2
_REPLY_LINE = re.compile(r"([2-5][0-9]{2})(?:([ -])(.*))?")
_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:\s|$)")
_SRV = re.compile(r"([A-Za-z0-9][A-Za-z0-9.-]*)")  # nmap: %d+%s([%w]+[%w%.-]*)
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")


class ProbeError(RemediateError):
    """An SMTP session could not be opened or continued."""


class ProbeDropped(ProbeError):
    """The server closed the connection, or writing to it failed."""


class ProbeTimeout(ProbeError):
    """No complete reply (or connection) within the timeout."""


class ProbeProtocolError(ProbeError):
    """The server sent something that is not an SMTP reply."""


class Stream(Protocol):
    """A socket, an SSL socket or a paramiko Channel."""

    def sendall(self, data: bytes) -> Any: ...
    def recv(self, n: int) -> bytes: ...
    def settimeout(self, timeout: float | None) -> Any: ...


Connect = Callable[[str, int, float], Stream]


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: its code and the text of each line (without the code)."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def klass(self) -> int:
        return self.code // 100

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code of the first line, when its class matches the reply's."""
        m = _ENHANCED.match(self.lines[0]) if self.lines else None
        return ".".join(m.groups()) if m and int(m[1]) == self.klass else None

    def __str__(self) -> str:
        text = f"{self.code} {' / '.join(self.lines)}"
        return "".join(c if c.isprintable() else "?" for c in text)[:160]


@dataclass(frozen=True, slots=True)
class RelayAttempt:
    """One MAIL/RCPT pair. `form` is the nmap test number (0 = local or anonymous check)."""

    mail_from: str
    rcpt_to: str
    mail_reply: Reply | None
    rcpt_reply: Reply | None
    dropped: bool
    form: int = 0

    @property
    def accepted(self) -> bool:
        return (self.mail_reply is not None and self.mail_reply.klass == 2
                and self.rcpt_reply is not None and self.rcpt_reply.code in (250, 251))

    def __str__(self) -> str:
        return f"MAIL FROM:<{self.mail_from}> -> RCPT TO:<{self.rcpt_to}>"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Everything one probe or simulation saw; `errors` names what kept it from finishing."""

    address: str
    port: int
    banner: Reply | None = None
    source_address: str | None = None
    ehlo_auth: tuple[str, ...] = ()
    tls_offered: bool = False
    tls_auth: tuple[str, ...] | None = None
    anonymous_attempt: Reply | None = None
    relay_attempts: tuple[RelayAttempt, ...] = ()
    local_attempt: RelayAttempt | None = None
    errors: tuple[str, ...] = ()
    anonymous_relay: RelayAttempt | None = None  # form 2 tried after a 235 to AUTH ANONYMOUS
    reconnects: int = 0  # relay sessions reopened after a drop or 421
    ehlo: Reply | None = None  # the plaintext EHLO (or HELO) reply


class Status(StrEnum):
    SECURE = "secure"
    VULNERABLE = "vulnerable"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    findings: tuple[str, ...]
    reasons: tuple[str, ...]
    local_ok: bool | None


class SmtpSession:
    """The client side of one SMTP dialogue over a `Stream`.

    Every read returns within `timeout` seconds or raises `ProbeTimeout`; EOF or a failed write raises
    `ProbeDropped`; a non-SMTP reply raises `ProbeProtocolError`. `command` refuses DATA/BDAT and line breaks.
    """

    def __init__(self, stream: Stream, *, timeout: float = 10.0) -> None:
        self.stream, self.timeout = stream, timeout
        self._buf, self._last = b"", "the greeting"
        self.broken = False  # set once a read or write failed: the dialogue cannot be trusted any more

    def read_reply(self) -> Reply:
        """The next reply, whole. A 421 (server closing) marks the session `broken`, as any failure does."""
        try:
            reply = self._read_reply()
        except ProbeError:
            self.broken = True
            raise
        self.broken = self.broken or reply.code == 421
        return reply

    def _read_reply(self) -> Reply:
        deadline, lines = time.monotonic() + self.timeout, []
        while True:
            m = _REPLY_LINE.fullmatch(self._readline(deadline))
            if not m:
                raise ProbeProtocolError(f"not an SMTP reply to {self._last}")
            lines.append(m[3] or "")
            if m[2] != "-":
                return Reply(int(m[1]), tuple(lines))
            if len(lines) >= _MAX_LINES:
                raise ProbeProtocolError(f"reply to {self._last} has more than {_MAX_LINES} lines")

    def command(self, line: str) -> Reply:
        verb = line.split(" ", 1)[0].upper()
        if verb in ("DATA", "BDAT"):
            raise ValueError("the probe never sends DATA or BDAT: nothing may ever be queued")
        if not verb or "\r" in line or "\n" in line:
            raise ValueError(f"refusing to send a malformed SMTP command: {line!r}")
        self._last = verb
        self._send(line)
        return self.read_reply()

    def auth_anonymous(self, trace: str) -> Reply:
        """Two-step `AUTH ANONYMOUS` (RFC 4505); returns the final reply. A second 334 is cancelled (`*`)."""
        reply = self.command("AUTH ANONYMOUS")
        if reply.code != 334:
            return reply
        self._send(base64.b64encode(trace.encode()).decode("ascii"))
        reply = self.read_reply()
        if reply.code == 334:
            self._send("*")
            reply = self.read_reply()
        return reply

    def starttls(self, context: ssl.SSLContext) -> Reply:
        """STARTTLS and the handshake; returns the non-220 reply if refused. Plaintext bytes buffered
        before the handshake are discarded (STARTTLS command injection)."""
        reply = self.command("STARTTLS")
        if reply.code != 220:
            return reply
        if not isinstance(self.stream, socket.socket):
            raise ProbeError("STARTTLS needs a socket; this stream cannot carry TLS")
        self._buf, self.broken = b"", True  # until the handshake completes
        self.stream.settimeout(self.timeout)
        try:
            self.stream = context.wrap_socket(self.stream)
        except TimeoutError as exc:
            raise ProbeTimeout(f"TLS handshake timed out after {self.timeout:g}s") from exc
        except OSError as exc:
            raise ProbeError(f"TLS handshake failed: {exc}") from exc
        self.broken = False
        return reply

    def rset(self) -> Reply:
        return self.command("RSET")

    def quit(self) -> None:
        """QUIT unless the session is broken, then close the stream; never raises."""
        with contextlib.suppress(ProbeError):
            if not self.broken:
                self.command("QUIT")
        close = getattr(self.stream, "close", None)
        if close is not None:
            with contextlib.suppress(OSError):
                close()

    def _send(self, line: str) -> None:
        try:
            self.stream.settimeout(self.timeout)
            self.stream.sendall(line.encode() + b"\r\n")
        except TimeoutError as exc:
            self.broken = True
            raise ProbeTimeout(f"sending {self._last} timed out") from exc
        except OSError as exc:
            self.broken = True
            raise ProbeDropped(f"connection lost sending {self._last}: {exc}") from exc

    def _readline(self, deadline: float) -> str:
        while (i := self._buf.find(b"\n")) < 0:
            if len(self._buf) > _MAX_LINE:
                raise ProbeProtocolError(f"reply line to {self._last} longer than {_MAX_LINE} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProbeTimeout(f"no complete reply to {self._last} within {self.timeout:g}s")
            try:
                self.stream.settimeout(remaining)
                chunk = self.stream.recv(4096)
            except TimeoutError as exc:
                raise ProbeTimeout(f"no complete reply to {self._last} within {self.timeout:g}s") from exc
            except OSError as exc:
                raise ProbeDropped(f"connection lost waiting for the reply to {self._last}: {exc}") from exc
            if not chunk:
                raise ProbeDropped(f"server closed the connection after {self._last}")
            self._buf += chunk
        line, self._buf = self._buf[:i], self._buf[i + 1:]
        return line.rstrip(b"\r").decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Capabilities:
    auth: tuple[str, ...]
    starttls: bool
    xclient: bool
    name: str | None  # first word of the EHLO greeting


def parse_ehlo(reply: Reply) -> Capabilities:
    """Keywords of an EHLO reply. AUTH mechanisms come from `AUTH ...` lines (Nessus 54580) and the legacy
    `AUTH=...` spelling, uppercased, in order, without duplicates."""
    mechs: list[str] = []
    keywords: set[str] = set()
    for line in reply.lines[1:]:
        words = line.split()
        if not words:
            continue
        keyword, _, first = words[0].upper().partition("=")
        keywords.add(keyword)
        if keyword == "AUTH":
            mechs += [m.upper() for m in ([first] if first else []) + words[1:] if m.upper() not in mechs]
    name = _SRV.match(reply.lines[0]) if reply.lines else None
    return Capabilities(tuple(mechs), "STARTTLS" in keywords, "XCLIENT" in keywords, name and name[1])


_FORMS = (  # nmap smtp-open-relay.nse, in its order: (number, MAIL FROM, RCPT TO)
    (1, "", "{T}@{D}"), (2, "{F}@{D}", "{T}@{D}"), (3, "{F}@{SRV}", "{T}@{D}"),
    (4, "{F}@[{IP}]", "{T}@{D}"), (5, "{F}@[{IP}]", "{T}%{D}@[{IP}]"), (6, "{F}@[{IP}]", "{T}%{D}@{SRV}"),
    (7, "{F}@[{IP}]", '"{T}@{D}"'), (8, "{F}@[{IP}]", '"{T}%{D}"'), (9, "{F}@[{IP}]", "{T}@{D}@[{IP}]"),
    (10, "{F}@[{IP}]", '"{T}@{D}"@[{IP}]'), (11, "{F}@[{IP}]", "{T}@{D}@{SRV}"),
    (12, "{F}@[{IP}]", "@[{IP}]:{T}@{D}"), (13, "{F}@[{IP}]", "@{SRV}:{T}@{D}"),
    (14, "{F}@[{IP}]", "{D}!{T}"), (15, "{F}@[{IP}]", "{D}!{T}@[{IP}]"), (16, "{F}@[{IP}]", "{D}!{T}@{SRV}"),
)


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


def _open(connect: Connect, address: str, port: int, helo: str, timeout: float,
          tls: ssl.SSLContext | None = None) -> _Opened:
    """Connect, read the banner, EHLO (and STARTTLS + EHLO when `tls`); never raises, reports `error`."""
    try:
        stream = connect(address, port, timeout)
    except OSError as exc:
        return _Opened(None, error=f"cannot connect to {address}:{port}: {exc}")
    session, opened = SmtpSession(stream, timeout=timeout), _Opened(None)
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

    @property
    def alive(self) -> bool:
        return self.strikes < _MAX_STRIKES

    def ensure(self) -> SmtpSession | None:
        while self.session is None and self.alive:
            opened = self._opener()
            self.opens += 1
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
                # rotated before an MTA's error tarpit starts (Postfix sleeps 1 s per error past 10).
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


def _tls_context() -> ssl.SSLContext:
    """A scanner's context: no certificate checks, weak ciphers allowed (we only read EHLO)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with contextlib.suppress(ssl.SSLError):
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def _check_names(**names: str | None) -> None:
    for key, value in names.items():
        if value is not None and not _HOSTNAME.fullmatch(value):
            raise ValueError(f"{key} must be a plain host or domain name, got {value!r}")


def _default_connect(source_address: str | None) -> Connect:
    def connect(address: str, port: int, timeout: float) -> Stream:
        source = (source_address, 0) if source_address else None
        return socket.create_connection((address, port), timeout, source)
    return connect


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


def _server_name(banner: Reply, caps: Capabilities, default: str) -> str:
    """nmap's SRV: the host name after the banner's code, else the EHLO greeting's, else `default`."""
    m = _SRV.match(banner.lines[0]) if banner.lines else None
    return m[1] if m else caps.name or default


def probe(address: str, port: int = 25, *, probe_domain: str = "relaytest.example.net",
          local_domain: str | None = None, helo: str = "probe.remediate.example", timeout: float = 10.0,
          source_address: str | None = None, tls: bool = True, connect: Connect | None = None) -> ProbeResult:
    """Probe a live MTA from here. Never raises for network trouble (it lands in `errors`); raises ValueError
    for a malformed domain or HELO name. Runs all 16 relay forms, reconnecting after drops or 421s."""
    _check_names(probe_domain=probe_domain, local_domain=local_domain, helo=helo)
    connect = connect or _default_connect(source_address)

    def opener(context: ssl.SSLContext | None = None) -> _Opened:
        return _open(connect, address, port, helo, timeout, context)

    link = _Link(opener)
    session = link.ensure()
    first = link.first
    if session is None or first is None or first.ehlo is None:
        return ProbeResult(address, port, first.banner if first else None, source_address,
                           errors=tuple(link.errors))
    caps = parse_ehlo(first.ehlo)
    srv = _server_name(first.banner, caps, address) if first.banner else address
    source, ip = _endpoint(session.stream, "getsockname"), _endpoint(session.stream, "getpeername")
    attempts = []
    for form, mail_from, rcpt_to in relay_forms(probe_domain, srv, ip or address):
        if not link.alive:
            break
        attempts.append(link.attempt(form, mail_from, rcpt_to))
    local = None
    if local_domain:  # recorded as dropped if the link gave up
        local = link.attempt(0, f"{SENDER}@{probe_domain}", f"postmaster@{local_domain}")
    link.close()
    errors = list(link.errors)
    if len(attempts) < len(_FORMS):
        errors.append(f"only {len(attempts)} of {len(_FORMS)} relay forms were tried")

    tls_auth = anonymous = anon_relay = None
    if tls and caps.starttls:
        opened = opener(_tls_context())
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
                       max(0, link.opens - 1), first.ehlo)


def _endpoint(stream: Stream, method: str) -> str | None:
    try:
        return str(getattr(stream, method)()[0])
    except (AttributeError, OSError, TypeError, IndexError):
        return None


def simulate(stream: Stream, *, xclient_addr: str = "203.0.113.9",
             probe_domain: str = "relaytest.example.net", local_domain: str | None = None,
             helo: str = "probe.remediate.example", timeout: float = 10.0) -> ProbeResult:
    """One session over `stream` to Postfix `smtpd -S`, posing as `xclient_addr` via XCLIENT.

    Relay forms run only after XCLIENT was accepted (otherwise the client is localhost, which proves
    nothing); they run before AUTH ANONYMOUS so an accepted login cannot colour them. A drop ends the
    session with an error; there is no reconnect. No STARTTLS (the stream is a pipe): `tls_auth` stays None.
    """
    _check_names(probe_domain=probe_domain, local_domain=local_domain, helo=helo)
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
        if not caps.xclient:
            raise ProbeError("XCLIENT is not offered, so the session counts as localhost; relay not tested")
        reply = session.command(f"XCLIENT ADDR={xclient_addr} NAME=[UNAVAILABLE]")
        if reply.code != 220:
            raise ProbeError(f"XCLIENT refused ({reply}); relay not tested from a simulated outside client")
        ehlo = _hello(session, helo)
        caps = parse_ehlo(ehlo)
        srv = _server_name(banner, caps, "localhost")
        for form, mail_from, rcpt_to in relay_forms(probe_domain, srv, None):
            attempts.append(_try_relay(session, form, mail_from, rcpt_to))
            if attempts[-1].dropped:
                raise ProbeDropped(f"form {form}: connection dropped during {attempts[-1]}")
            session.rset()
        if local_domain:
            local = _try_relay(session, 0, f"{SENDER}@{probe_domain}", f"postmaster@{local_domain}")
            if local.dropped:
                raise ProbeDropped(f"local check dropped during {local}")
            session.rset()
        if "ANONYMOUS" in caps.auth:
            anonymous, anon_relay = _anonymous(session, helo, probe_domain)
    except ProbeError as exc:
        errors.append(str(exc))
    finally:
        session.quit()
    return ProbeResult("smtpd -S", 0, banner, xclient_addr, caps.auth, caps.starttls, None, anonymous,
                       tuple(attempts), local, tuple(errors), anon_relay, 0, ehlo)


def _classify(attempt: RelayAttempt, defer_configured: bool) -> tuple[bool, str, Reply | None]:
    """(refused, why, deciding reply) for an attempt that was not accepted; decided on reply classes only."""
    mail, rcpt = attempt.mail_reply, attempt.rcpt_reply
    if attempt.dropped or mail is None:
        return False, "the connection dropped or timed out", rcpt or mail
    if mail.code == 530:
        return True, "MAIL FROM needs authentication", mail
    if mail.klass == 5:
        return True, "MAIL FROM refused", mail
    if mail.klass != 2:
        return False, "MAIL FROM got a reply that proves nothing", mail
    if rcpt is None:
        return False, "no RCPT reply", None
    if rcpt.klass == 5:
        return True, "RCPT refused", rcpt
    if rcpt.klass == 4 and defer_configured and (rcpt.enhanced == "4.7.1"
                                                  or (rcpt.code == 454 and rcpt.enhanced is None)):
        return True, "RCPT deferred, counted as refused because the host uses defer_unauth_destination", rcpt
    return False, "RCPT got a reply that proves nothing", rcpt


def _forms(numbers: list[int]) -> str:
    """`[1, 2, 3, 6]` -> "forms 1-3, 6"."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs)
    return ("form " if len(numbers) == 1 else "forms ") + text


def judge(result: ProbeResult, *, defer_configured: bool = False, orchestrator_trusted: bool = False,
          expect_local: str = "accept") -> Verdict:
    """Vulnerable if any finding; else inconclusive if anything could not be proven; else secure.

    Drops, timeouts, 4xx (except a 4.7.1 deferral when `defer_configured`), a missing banner and any
    recorded error are never secure. Raises ValueError for an unknown `expect_local`.
    """
    if expect_local not in ("accept", "refuse"):
        raise ValueError(f"expect_local must be 'accept' or 'refuse', not {expect_local!r}")
    findings: list[str] = []
    found: list[str] = []  # why each finding
    doubts: list[str] = []  # what keeps it from being secure
    facts: list[str] = []  # what was proven
    if result.banner is None:
        doubts.append(f"no SMTP banner from {result.address}:{result.port}")
    doubts += [f"probe error: {error}" for error in result.errors]

    where = [w for w, mechs in (("in plaintext", result.ehlo_auth), ("after STARTTLS", result.tls_auth or ()))
             if "ANONYMOUS" in mechs]
    if where:
        findings.append(ANONYMOUS_AUTH)
        tried = result.anonymous_attempt
        outcome = ("the attempt did not complete" if tried is None else
                   f"AUTH ANONYMOUS was {'accepted' if tried.code == 235 else 'refused'} ({tried})")
        found.append(f"ANONYMOUS is advertised {' and '.join(where)} (what Nessus 54581 flags); {outcome}")
    elif result.ehlo is not None:
        checked = "in plaintext" + (" or after STARTTLS" if result.tls_auth is not None else "")
        skipped = result.tls_offered and result.tls_auth is None
        unchecked = "; after STARTTLS was not checked" if skipped else ""
        facts.append(f"ANONYMOUS is not advertised {checked}{unchecked}")

    attempts = result.relay_attempts
    accepted = [a for a in attempts if a.accepted]
    if accepted:
        findings.append(OPEN_RELAY)
        listed = _forms([a.form for a in accepted])
        found.append(f"relay accepted for {len(accepted)} of {len(attempts)} tests ({listed}), "
                     f"e.g. {accepted[0]} ({accepted[0].rcpt_reply})")
    if result.anonymous_relay is not None and result.anonymous_relay.accepted:
        findings += [] if OPEN_RELAY in findings else [OPEN_RELAY]
        found.append(f"relay accepted after AUTH ANONYMOUS: {result.anonymous_relay}")
    groups: dict[tuple[bool, str, int, str | None], tuple[list[int], Reply | None]] = {}
    for attempt in attempts:  # grouped by outcome and reply code, one example reply each
        if not attempt.accepted:
            refused, why, decisive = _classify(attempt, defer_configured)
            key = (refused, why, decisive.code if decisive else 0, decisive.enhanced if decisive else None)
            groups.setdefault(key, ([], decisive))[0].append(attempt.form)
    for (refused, why, *_), (numbers, example) in groups.items():
        example_text = f" ({example})" if example else ""
        (facts if refused else doubts).append(f"{_forms(numbers)}: {why}{example_text}")
    if not attempts:
        doubts.append("no relay test was run")
    elif all(a.mail_reply and a.mail_reply.klass == 5 and a.mail_reply.code != 530 for a in attempts):
        doubts.append("every MAIL FROM was refused, so no recipient was ever tested")
    if orchestrator_trusted:  # the host relays for us by design: an accepted relay proves nothing either
        if OPEN_RELAY in findings:
            findings.remove(OPEN_RELAY)
            found = [f for f in found if not f.startswith("relay accepted")]
        doubts.append(f"probe source {result.source_address or 'unknown'} is in the host's trusted networks; "
                      "relay results from here prove nothing (probe from outside them)")

    local_ok, local = None, result.local_attempt
    if local is not None:
        domain = local.rcpt_to.rpartition("@")[2]
        refused = _classify(local, False)[0] if not local.accepted else False
        local_ok = local.accepted if expect_local == "accept" else refused
        reply = local.rcpt_reply or local.mail_reply or "connection dropped"
        if expect_local == "accept":
            (facts if local_ok else doubts).append(
                f"inbound mail for {domain} is {'accepted' if local_ok else 'refused'} ({reply})")
        elif local_ok:
            facts.append(f"unauthenticated mail for {domain} is refused, as the policy requires ({reply})")
        else:
            doubts.append(f"unauthenticated mail for {domain} was not refused as policy requires ({reply})")

    status = Status.VULNERABLE if findings else Status.INCONCLUSIVE if doubts else Status.SECURE
    return Verdict(status, tuple(findings), tuple(found + doubts + facts), local_ok)
