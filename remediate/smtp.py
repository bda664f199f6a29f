"""The SMTP wire: one client-side dialogue over a stream, its replies, and how they fail.

`SmtpSession` speaks the client side of RFC 5321 over any `Stream` (a socket, an SSL socket or a paramiko
Channel); `Reply` is one whole reply; `parse_ehlo` reads the EHLO keywords into `Capabilities`;
`RelayAttempt` and `ProbeResult` record what a session saw. The probe (`remediate.probe`) builds its
procedures on these and the verdict (`remediate.verdict`) judges them; nothing here decides what a reply
means.

Guarantees: DATA and BDAT are never sent (`SmtpSession.command` and `SmtpSession.send_group` refuse them, and
any command with a line break), a pipelined group (RFC 2920) holds only MAIL, RCPT and RSET before its last
command, every read returns or fails within `timeout`, bytes buffered before a STARTTLS handshake are
discarded, and nothing here logs. Failures raise the `ProbeError` family of `remediate.errors`
(`ProbeDropped`, `ProbeTimeout`, `ProbeProtocolError`).
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from remediate.errors import ProbeDropped, ProbeError, ProbeProtocolError, ProbeTimeout

_MAX_LINE, _MAX_LINES = 4096, 64
_REPLY_LINE = re.compile(r"([2-5][0-9]{2})(?:([ -])(.*))?")
_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:\s|$)")
_SRV = re.compile(r"([A-Za-z0-9][A-Za-z0-9.-]*)")  # nmap: %d+%s([%w]+[%w%.-]*)
#: RFC 2920 3.1: these may appear anywhere in a pipelined group; any other command only as its last
_GROUPABLE = frozenset({"MAIL", "RCPT", "RSET"})
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")


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


class SmtpSession:
    """The client side of one SMTP dialogue over a `Stream`.

    Every read returns within `timeout` seconds or raises `ProbeTimeout`; EOF or a failed write raises
    `ProbeDropped`; a non-SMTP reply raises `ProbeProtocolError`. `command` and `send_group` refuse DATA/BDAT
    and line breaks. With `send_group` (RFC 2920 pipelining, only where the server advertised PIPELINING)
    several commands go out in one write and `read_reply` then returns their replies one by one, in order.
    """

    def __init__(self, stream: Stream, *, timeout: float = 10.0, deadline: float | None = None) -> None:
        self.stream, self.timeout = stream, timeout
        self.deadline = deadline  # time.monotonic() after which no read or write waits any more (a whole probe's)
        self._buf, self._last = b"", "the greeting"
        self._pending: deque[str] = deque()  # verbs sent whose replies are still to be read, in order
        self._quit_sent = False
        self.broken = False  # set once a read or write failed: the dialogue cannot be trusted any more

    def read_reply(self) -> Reply:
        """The next reply, whole. A 421 (server closing) marks the session `broken`, as any failure does."""
        if self._pending:
            self._last = self._pending.popleft()
        try:
            reply = self._read_reply()
        except ProbeError:
            self.broken = True
            raise
        self.broken = self.broken or reply.code == 421
        return reply

    def _wait(self) -> float:
        """Seconds the next read or write may wait: `timeout`, or less when the probe's deadline is nearer.
        ProbeTimeout when that deadline has passed."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.broken = True
            raise ProbeTimeout(f"the probe's deadline passed before {self._last}")
        return min(self.timeout, left)

    def _read_reply(self) -> Reply:
        deadline, lines = time.monotonic() + self._wait(), []
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
        self.send_group((line,))
        return self.read_reply()

    def send_group(self, lines: Sequence[str]) -> None:
        """Send `lines` in one write: an RFC 2920 group, whose replies `read_reply` then returns in order. Only
        MAIL, RCPT and RSET may come before the last command (QUIT, say). ValueError, with nothing sent, for
        DATA, BDAT, a line break, an empty command or any other command before the last."""
        verbs = [_verb(line) for line in lines]
        if not verbs or any(verb not in _GROUPABLE for verb in verbs[:-1]):
            raise ValueError(f"not a group RFC 2920 allows: {' '.join(verbs)}")
        self._last = verbs[0] if len(verbs) == 1 else f"a pipelined group of {len(verbs)} commands"
        self._send("".join(line + "\r\n" for line in lines).encode())
        self._pending.extend(verbs)
        self._quit_sent = self._quit_sent or verbs[-1] == "QUIT"

    def auth_anonymous(self, trace: str) -> Reply:
        """Two-step `AUTH ANONYMOUS` (RFC 4505); returns the final reply. A second 334 is cancelled (`*`)."""
        reply = self.command("AUTH ANONYMOUS")
        if reply.code != 334:
            return reply
        self._send(base64.b64encode(trace.encode()) + b"\r\n")
        reply = self.read_reply()
        if reply.code == 334:
            self._send(b"*\r\n")
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
        self.stream.settimeout(self._wait())
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
        """QUIT unless the session is broken (or QUIT went out in a group: then its reply is read), then close
        the stream; never raises."""
        with contextlib.suppress(ProbeError):
            if self._quit_sent:
                while self._pending and not self.broken:
                    self.read_reply()
            elif not self.broken:
                self.command("QUIT")
        close = getattr(self.stream, "close", None)
        if close is not None:
            with contextlib.suppress(OSError):
                close()

    def _send(self, data: bytes) -> None:
        try:
            self.stream.settimeout(self._wait())
            self.stream.sendall(data)
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


def _verb(line: str) -> str:
    """The command's verb; ValueError for DATA, BDAT, an empty command or a line break."""
    verb = line.split(" ", 1)[0].upper()
    if verb in ("DATA", "BDAT"):
        raise ValueError("the probe never sends DATA or BDAT: nothing may ever be queued")
    if not verb or "\r" in line or "\n" in line:
        raise ValueError(f"refusing to send a malformed SMTP command: {line!r}")
    return verb


@dataclass(frozen=True, slots=True)
class Capabilities:
    auth: tuple[str, ...]
    starttls: bool
    xclient: bool
    name: str | None  # first word of the EHLO greeting
    pipelining: bool = False  # RFC 2920 PIPELINING advertised


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
    return Capabilities(tuple(mechs), "STARTTLS" in keywords, "XCLIENT" in keywords, name and name[1],
                        "PIPELINING" in keywords)


def server_name(banner: Reply, caps: Capabilities, default: str) -> str:
    """nmap's SRV: the host name after the banner's code, else the EHLO greeting's, else `default`."""
    m = _SRV.match(banner.lines[0]) if banner.lines else None
    return m[1] if m else caps.name or default


def scanner_tls_context() -> ssl.SSLContext:
    """A scanner's context: no certificate checks, weak ciphers allowed (we only read EHLO)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with contextlib.suppress(ssl.SSLError):
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def check_names(**names: str | None) -> None:
    """Refuse (ValueError naming the keyword) any name that is not a plain host or domain name, so nothing
    a caller passes can smuggle a line break or a second command into the dialogue. None is allowed."""
    for key, value in names.items():
        if value is not None and not _HOSTNAME.fullmatch(value):
            raise ValueError(f"{key} must be a plain host or domain name, got {value!r}")


def default_connect(source_address: str | None) -> Connect:
    """A `Connect` opening a plain TCP socket, bound to `source_address` when given, with TCP_NODELAY (a small
    command or pipelined group is sent at once, not held back by Nagle until the last segment is acknowledged)."""
    def connect(address: str, port: int, timeout: float) -> Stream:
        source = (source_address, 0) if source_address else None
        sock = socket.create_connection((address, port), timeout, source)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    return connect


#: relay tests scanners do not run, numbered after nmap's 16: a sender forged in a domain the host serves
#: (relays through an access table that whitelists the host's own sender domains), and role
#: recipients at the foreign domain (relay through recipient whitelists placed ahead of the relay stop)
OWN_SENDER, POSTMASTER, ABUSE = 17, 18, 19
EXTRA_FORMS = {OWN_SENDER: "sender in a domain the host serves", POSTMASTER: "postmaster@ a foreign domain",
               ABUSE: "abuse@ a foreign domain"}


def implicit_tls_connect(source_address: str | None = None) -> Connect:
    """A `Connect` that speaks TLS from the first byte (RFC 8314, port 465), with the scanner's context."""
    plain = default_connect(source_address)

    def connect(address: str, port: int, timeout: float) -> Stream:
        sock = plain(address, port, timeout)
        try:
            return scanner_tls_context().wrap_socket(sock)  # type: ignore[arg-type]
        except OSError:
            sock.close()  # type: ignore[attr-defined]
            raise
    return connect


@dataclass(frozen=True, slots=True)
class RelayAttempt:
    """One MAIL/RCPT pair. `form` is the test number: nmap's 1-16, ours 17-19 (`EXTRA_FORMS`), 0 = the
    local or anonymous check."""

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
    connected: bool = False  # a TCP connection (or the simulation's stream) was accepted
