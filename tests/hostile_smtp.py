"""A small scriptable SMTP server for tests, hostile on purpose.

`HostileSmtp(behaviour)` listens on 127.0.0.1 (port 0) and runs one thread per connection;
`serve_pair(behaviour)` runs the same dialogue over one end of a socketpair (what `simulate` sees on a
`smtpd -S` pipe). A `Behaviour` (subclass or keyword overrides) scripts the server: the banner, EHLO keywords,
the replies to MAIL, RCPT, AUTH and XCLIENT, when to drop. Every line the server receives is recorded in a
`Transcript`, so a test can assert what the client did and did not send (DATA, RSET, QUIT), and how many
times the server had to wait for the client (`Transcript.reads`: one per round trip the client needed, so a
pipelined group counts once), and whether the client pipelined where PIPELINING was not advertised.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

OPEN_RELAY_OK = "250 2.1.5 Ok"


@dataclass
class Transcript:
    """(connection number, line) for every line received, in order; thread-safe."""

    lines: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: connection number -> reads that brought new input after the server had answered all it had
    reads: dict[int, int] = field(default_factory=dict)
    #: lines that came in one read with the line before though PIPELINING was not advertised (RFC 2920 forbids)
    unasked_pipelining: list[str] = field(default_factory=list)

    def add(self, number: int, line: str) -> None:
        with self.lock:
            self.lines.append((number, line))

    def waited(self, number: int) -> None:
        with self.lock:
            self.reads[number] = self.reads.get(number, 0) + 1

    def verbs(self) -> list[str]:
        with self.lock:
            return [line.split(" ", 1)[0].upper() for _, line in self.lines if line]

    def matching(self, prefix: str) -> list[str]:
        with self.lock:
            return [line for _, line in self.lines if line.upper().startswith(prefix.upper())]

    @property
    def connections(self) -> int:
        with self.lock:
            return len({number for number, _ in self.lines})


class Conversation:
    """Server side of one SMTP session. State a `Behaviour` may read or set: `errors`, `client` (the
    XCLIENT ADDR), `tls`, `closing` (close after the current reply), `rcpts` (RCPTs on this connection)."""

    def __init__(self, stream: socket.socket, behaviour: Behaviour, transcript: Transcript,
                 number: int) -> None:
        self.stream, self.behaviour, self.transcript, self.number = stream, behaviour, transcript, number
        self.buf = b""
        self.helo = self.tls = self.closing = self.ahead = False
        self.sender: str | None = None
        self.client: str | None = None
        self.errors = self.rcpts = 0

    def run(self) -> None:
        b = self.behaviour
        with b.lock:
            b.open_now += 1
            b.peak = max(b.peak, b.open_now)
            crowded = b.max_sessions is not None and b.open_now > b.max_sessions
        try:
            if crowded:   # Postfix's anvil, Exim's smtp_accept_max_per_host
                self.stream.sendall(b"421 4.7.0 mx.hostile.test Error: too many connections from you\r\n")
                return
            if b.silent:
                while self.stream.recv(4096):
                    pass
                return
            if self.number == b.hold:
                b.one_ended.wait(b.hold_seconds)
            for chunk in b.greeting():
                self.stream.sendall(chunk)
                time.sleep(b.trickle)
            if b.drop_after_banner:
                return
            while not self.closing and (line := self.readline()) is not None:
                self.transcript.add(self.number, line)
                if self.ahead and not b.pipelining and not self.tls:
                    with self.transcript.lock:
                        self.transcript.unasked_pipelining.append(line)
                reply = self.dispatch(line)
                verb = line.split(" ", 1)[0].upper()
                if verb in b.raw_replies:   # sent as it is, without a copy (a huge line stays one buffer)
                    self.stream.sendall(memoryview(b.raw_replies[verb]))
                    continue
                data = reply.replace("\n", "\r\n").encode() + b"\r\n"
                if line.split(" ", 1)[0].upper() == b.drop_mid_reply:
                    self.stream.sendall(data[:len(data) // 2])   # half a reply, then the connection is gone
                    return
                self.send_reply(data)
                if reply.startswith("220 ") and line.upper() == "STARTTLS":
                    if b.stall_tls:   # takes the STARTTLS, then never answers the client's handshake
                        while self.stream.recv(4096):
                            pass
                        return
                    assert b.tls is not None
                    self.stream = b.tls.wrap_socket(self.stream, server_side=True)
                    self.tls, self.helo, self.buf = True, False, b""
        except OSError:
            pass
        finally:
            self.stream.close()
            with b.lock:
                b.open_now -= 1
            if self.number != b.hold:
                b.one_ended.set()

    def send_reply(self, data: bytes) -> None:
        """A reply, at once or one byte every `reply_trickle` seconds; `reply_delay` seconds after the command."""
        time.sleep(self.behaviour.reply_delay)
        if not self.behaviour.reply_trickle:
            self.stream.sendall(data)
            return
        for i in range(len(data)):
            self.stream.sendall(data[i:i + 1])
            time.sleep(self.behaviour.reply_trickle)

    def readline(self) -> str | None:
        self.ahead = b"\n" in self.buf  # this line came with the one before: the client did not wait
        if not self.ahead:
            self.transcript.waited(self.number)
        while b"\n" not in self.buf:
            chunk = self.stream.recv(4096)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def dispatch(self, line: str) -> str:
        b = self.behaviour
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            self.helo, self.sender = True, None
            keywords = ["PIPELINING"] if b.pipelining else []
            keywords += ["SIZE 10240000"]
            keywords += ["STARTTLS"] if (b.tls or b.stall_tls) and not self.tls else []
            keywords += ["XCLIENT NAME ADDR PROTO HELO"] if b.xclient else []
            keywords += [f"AUTH {' '.join(self.mechanisms)}"] if self.mechanisms else []
            return "\n".join(f"250-{k}" for k in [b.host, *keywords]) + "\n250 8BITMIME"
        if verb == "HELO":
            self.helo = True
            return f"250 {b.host}"
        if verb == "STARTTLS":
            ready = (b.tls or b.stall_tls) and not self.tls
            return "220 2.0.0 Ready to start TLS" if ready else "454 4.7.0 TLS not available"
        if verb == "AUTH":
            return self.auth(arg)
        if verb == "XCLIENT":
            if not b.xclient:
                return "502 5.5.2 Error: command not recognized"
            reply = b.xclient_reply(self, arg)
            if reply.startswith("220"):
                self.client = dict(kv.split("=", 1) for kv in arg.split() if "=" in kv).get("ADDR")
                self.helo, self.sender = False, None
            return reply
        if verb == "MAIL":
            if not self.helo:
                return "503 5.5.1 Error: send HELO/EHLO first"
            if self.sender is not None:
                return "503 5.5.1 Error: nested MAIL command"
            address = arg.partition(":")[2].strip().strip("<>")
            reply = b.mail(self, address)
            self.sender = address if reply.startswith("2") else None
            return reply
        if verb == "RCPT":
            if self.sender is None:
                return "503 5.5.1 Error: need MAIL command"
            self.rcpts += 1
            address = arg.partition(":")[2].strip()[1:-1]
            return b.rcpt(self, address)
        if verb == "RSET":
            self.sender = None
            return "250 2.0.0 Ok"
        if verb == "NOOP":
            return "250 2.0.0 Ok"
        if verb == "QUIT":
            self.closing = True
            return "221 2.0.0 Bye"
        if verb == "DATA":  # never sent by the probe; answered like a real MTA so a test would notice
            return "354 End data with <CR><LF>.<CR><LF>"
        return b.syntax_error(self, "502 5.5.2 Error: command not recognized")

    @property
    def mechanisms(self) -> tuple[str, ...]:
        b = self.behaviour
        return b.auth_tls if self.tls and b.auth_tls is not None else b.auth

    def auth(self, arg: str) -> str:
        mechanism, _, initial = arg.partition(" ")
        if mechanism.upper() not in self.mechanisms:
            return "504 5.5.4 Unrecognized authentication type"
        if mechanism.upper() != "ANONYMOUS":
            return "535 5.7.8 Error: authentication failed"
        if not initial:
            self.stream.sendall(b"334 \r\n")
            response = self.readline()
            if response is None:
                return "421 4.4.2 lost"
            self.transcript.add(self.number, response)
            initial = response
        if initial == "*":
            return "501 5.7.0 Authentication aborted"
        self.behaviour.traces.append(base64.b64decode(initial).decode() if initial != "=" else "")
        return self.behaviour.anonymous_reply


class Behaviour:
    """A well-behaved MX: refuses relay with 554 5.7.1, accepts mail for example.org. Subclass to script."""

    host = "mx.hostile.test"
    banner: tuple[str, ...] = ("220 mx.hostile.test ESMTP Postfix (Debian/GNU)",)
    auth: tuple[str, ...] = ()
    auth_tls: tuple[str, ...] | None = None  # None: same as `auth`
    tls: ssl.SSLContext | None = None
    xclient = False
    pipelining = True  # advertise PIPELINING (RFC 2920) in EHLO
    silent = False
    drop_after_banner = False
    trickle = 0.0  # seconds between banner bytes (0: the banner is sent at once)
    reply_trickle = 0.0  # seconds between the bytes of every other reply
    reply_delay = 0.0  # seconds every reply after the banner waits before it is sent (whole)
    raw_banner: bytes | None = None  # sent as the greeting instead of `banner` (garbage, a huge line)
    drop_mid_reply: str | None = None  # a verb (e.g. "MAIL") whose reply is cut in half by a closed connection
    raw_replies: dict[str, bytes] = {}  # noqa: RUF012 - verb -> bytes sent instead of the reply (never mutated)
    stall_tls = False  # answer STARTTLS with 220, then never take part in the handshake
    max_errors: int | None = None
    max_sessions: int | None = None  # connections open at once; beyond: 421 at the greeting
    #: the connection accepted as number `hold` (1, 2, ...) is greeted only once another one has ended (at the
    #: latest after `hold_seconds`): a connection left in the listen queue while one process serves another
    #: (Postfix's master after a reload, while it still counts an old smtpd as idle)
    hold: int | None = None
    hold_seconds = 4.0
    anonymous_reply = "235 2.7.0 Authentication successful"
    local_domains = ("example.org",)

    def __init__(self, **overrides: object) -> None:
        self.traces: list[str] = []
        self.lock, self.open_now, self.peak = threading.Lock(), 0, 0   # connections open now, and at most
        self.one_ended = threading.Event()
        for key, value in overrides.items():
            assert hasattr(self, key), key
            setattr(self, key, value)

    def greeting(self) -> list[bytes] | list[memoryview]:
        if self.raw_banner is not None:   # views, not copies: the peer's memory is not the probe's
            view = memoryview(self.raw_banner)
            return [view[i:i + 65536] for i in range(0, len(view), 65536)]
        data = "".join(line + "\r\n" for line in self.banner).encode()
        return [data[i:i + 1] for i in range(len(data))] if self.trickle else [data]

    def is_local(self, address: str) -> bool:
        return address.rpartition("@")[2].lower() in self.local_domains

    def mail(self, conv: Conversation, address: str) -> str:
        return "250 2.1.0 Ok"

    def rcpt(self, conv: Conversation, address: str) -> str:
        return "250 2.1.5 Ok" if self.is_local(address) else self.relay(conv, address)

    def relay(self, conv: Conversation, address: str) -> str:
        return f"554 5.7.1 <{address}>: Relay access denied"

    def xclient_reply(self, conv: Conversation, arg: str) -> str:
        return f"220 {self.host} ESMTP Postfix"

    def syntax_error(self, conv: Conversation, reply: str) -> str:
        """Exim style: after `max_errors` syntax errors, add the farewell line and close."""
        conv.errors += 1
        if self.max_errors is not None and conv.errors >= self.max_errors:
            conv.closing = True
            code = reply[:3]
            return f"{code}-{reply[4:]}\n{code} Too many syntax or protocol errors"
        return reply


class OpenRelay(Behaviour):
    def relay(self, conv: Conversation, address: str) -> str:
        return OPEN_RELAY_OK


class DebianDefer(Behaviour):
    def relay(self, conv: Conversation, address: str) -> str:
        return f"454 4.7.1 <{address}>: Relay access denied"


class Greylister(Behaviour):
    def rcpt(self, conv: Conversation, address: str) -> str:
        return f"450 4.2.0 <{address}>: Recipient address rejected: Greylisted, try again later"


class ConfigError451(Behaviour):
    def relay(self, conv: Conversation, address: str) -> str:
        return "451 4.3.5 Server configuration error"


class AuthRequired(Behaviour):
    auth = ("PLAIN", "LOGIN")

    def mail(self, conv: Conversation, address: str) -> str:
        return "530 5.7.0 Authentication required"


class EximDefault(Behaviour):
    """Debian's Exim: 550 to relay, 501 to domain literals, farewell and close after 3 syntax errors."""

    host = "mx.exim.test"
    banner = ("220 mx.exim.test ESMTP Exim 4.96 Mon, 01 Jan 2024 00:00:00 +0000",)
    max_errors = 3

    def mail(self, conv: Conversation, address: str) -> str:
        if "[" in address:
            return self.syntax_error(conv, f"501 <{address}>: domain literals not allowed")
        return "250 OK"

    def relay(self, conv: Conversation, address: str) -> str:
        return "550 relay not permitted"


class Drop421Once(Behaviour):
    """Answers the `nth` RCPT of the first connection that gets so many with 421 (`drop`: closes without a word
    instead) and closes; every other RCPT behaves. `hit` is the address it was answering."""

    nth = 5
    drop = False

    def __init__(self, **overrides: object) -> None:
        super().__init__(**overrides)
        self.hit = ""

    def relay(self, conv: Conversation, address: str) -> str:
        with self.lock:
            fire = not self.hit and conv.rcpts == self.nth
            self.hit = address if fire else self.hit
        if fire:
            conv.closing = True
            if self.drop:
                conv.stream.close()
                raise OSError("dropped on purpose")
            return "421 4.7.0 mx.hostile.test Error: too many errors"
        return super().relay(conv, address)


class PostfixXclient(Behaviour):
    """`smtpd -S`: the client is localhost (trusted, relays everything) until XCLIENT names an outside one."""

    xclient = True

    def relay(self, conv: Conversation, address: str) -> str:
        return OPEN_RELAY_OK if conv.client is None else super().relay(conv, address)


class SenderWhitelist(Behaviour):
    """Relays for anyone who claims a sender in example.org (an access table answering OK for its own domain);
    refuses mail for its own domain otherwise: never an MX."""

    def rcpt(self, conv: Conversation, address: str) -> str:
        if (conv.sender or "").rpartition("@")[2].lower() == "example.org":
            return OPEN_RELAY_OK
        return f"554 5.7.1 <{address}>: Recipient address rejected: Access denied"


class RecipientWhitelist(Behaviour):
    """Relays postmaster@ and abuse@ at any domain (a recipient table ahead of the relay stop)."""

    def relay(self, conv: Conversation, address: str) -> str:
        if address.lower().startswith(("postmaster@", "abuse@")):
            return OPEN_RELAY_OK
        return super().relay(conv, address)


class HostileSmtp:
    """Threaded server on 127.0.0.1; `with HostileSmtp(b) as server: probe(*server.address)`."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour, self.transcript = behaviour, Transcript()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.accepted = 0
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> HostileSmtp:
        self._threads.append(threading.Thread(target=self._accept, daemon=True))
        self._threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=2)
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(5)
            self.accepted += 1
            self._sockets.append(sock)
            conv = Conversation(sock, self.behaviour, self.transcript, self.accepted)
            thread = threading.Thread(target=conv.run, daemon=True)
            self._threads.append(thread)
            thread.start()


def serve_pair(behaviour: Behaviour) -> tuple[socket.socket, Transcript, threading.Thread]:
    """The client end of a socketpair whose other end runs `behaviour` in a thread."""
    client, server = socket.socketpair()
    server.settimeout(5)
    transcript = Transcript()
    thread = threading.Thread(target=Conversation(server, behaviour, transcript, 1).run, daemon=True)
    thread.start()
    return client, transcript, thread
