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

Speed: where EHLO advertises PIPELINING (RFC 2920) a session sends its tests (MAIL, RCPT, RSET each) as one
group and reads the replies in order, and `probe` runs its sessions at once (at most `_MAX_SESSIONS`
connections): about ten round trips for a whole probe instead of ninety. The replies are recorded as the
sequential dialogue (kept for servers without PIPELINING) would have seen them: a RCPT answered after a
refused MAIL is not kept, and a sender whose MAIL was refused once gets no RCPT in later groups (one MTA we
know counts a 503 to it as an error, and slows down from the tenth error on).

Guarantees: DATA and BDAT are never sent (`SmtpSession.command` and `send_group` refuse them), every
transaction is ended by RSET or QUIT, every read returns or fails within `timeout`, and nothing here logs:
everything is returned. Session failures raise `ProbeError` subclasses inside; `probe`/`simulate` record them
in `ProbeResult.errors`.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

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
#: a whole probe of one service may take this many read timeouts (see `probe`)
BUDGET_READS = 6
_ROTATE_AFTER = 6  # relay tests per session: under the error tarpits (one MTA we know sleeps from ten errors on)
_MAX_SESSIONS = 5  # connections to one host at once
#: a server that answers a TCP connect this fast (seconds) is near: concurrency saves round trips worth less
#: than the server processes each extra connection starts (an MTA forks or spawns one per connection), so
#: the probe keeps to `_NEAR_SESSIONS` connections at once there
_NEAR, _NEAR_SESSIONS = 0.005, 2
_LEARN = 4  # the first group: the first test of each sender, to learn which MAIL FROMs are refused

Test = tuple[int, str, str]  # (form, MAIL FROM, RCPT TO)


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


def _read_attempt(session: SmtpSession, test: Test, rcpt_sent: bool) -> RelayAttempt:
    """The replies to one test of a pipelined group (MAIL, RCPT when sent, RSET), kept as the sequential dialogue
    would have them: the reply to a RCPT after a refused MAIL (a 503) is read and dropped, and a failure there
    does not make the attempt `dropped`. A 2xx to MAIL whose RCPT was left out comes back without a RCPT reply:
    `_left_out`, to be run again."""
    form, mail_from, rcpt_to = test
    mail = rcpt = None
    with contextlib.suppress(ProbeError):  # the session is `broken` afterwards
        mail = session.read_reply()
        if rcpt_sent and not session.broken:
            answer = session.read_reply()
            rcpt = answer if mail.klass == 2 else None
    dropped = session.broken and (mail is None or mail.klass == 2 or mail.code == 421)
    if not session.broken:
        with contextlib.suppress(ProbeError):
            session.read_reply()  # RSET's
    return RelayAttempt(mail_from, rcpt_to, mail, rcpt, dropped, form)


def _left_out(attempt: RelayAttempt) -> bool:
    """MAIL was accepted but the group held no RCPT for it (its sender had been refused before): run it again."""
    return (not attempt.dropped and attempt.rcpt_reply is None and attempt.mail_reply is not None
            and attempt.mail_reply.klass == 2)


def _run(session: SmtpSession, tests: Sequence[Test], *, pipelining: bool, refused: frozenset[str] = frozenset(),
         quit: bool = True) -> list[RelayAttempt | None]:
    """Run `tests` on `session`, in order: MAIL, RCPT (after a 2xx to MAIL) and RSET each, one command at a time,
    or with `pipelining` as one RFC 2920 group (no RCPT for a sender in `refused`; QUIT last when `quit`).
    One entry per test: its attempt (`dropped` for the one the session broke during), or None when the session
    broke before it. Never raises; with `quit` the session is ended."""
    outcomes: list[RelayAttempt | None] = []
    if not pipelining:
        for form, mail_from, rcpt_to in tests:
            if session.broken:
                outcomes.append(None)
                continue
            outcomes.append(attempt := _try_relay(session, form, mail_from, rcpt_to))
            if not attempt.dropped:
                with contextlib.suppress(ProbeError):
                    session.rset()
    elif tests:
        sent = [mail_from not in refused for _, mail_from, _ in tests]
        lines = []
        for (_, mail_from, rcpt_to), rcpt in zip(tests, sent, strict=True):
            lines += [f"MAIL FROM:<{mail_from}>", *([f"RCPT TO:<{rcpt_to}>"] if rcpt else []), "RSET"]
        try:
            session.send_group([*lines, "QUIT"] if quit else lines)
        except ProbeError:
            form, mail_from, rcpt_to = tests[0]
            outcomes = [RelayAttempt(mail_from, rcpt_to, None, None, True, form), *[None] * (len(tests) - 1)]
        else:
            outcomes = [None if session.broken else _read_attempt(session, test, rcpt)
                        for test, rcpt in zip(tests, sent, strict=True)]
    if quit:
        session.quit()
    return outcomes


def _first_group(tests: Sequence[tuple[int, Test]]) -> tuple[list[tuple[int, Test]], list[tuple[int, Test]]]:
    """The first test of each sender (at most `_LEARN`), and the rest, each in the order given."""
    senders: set[str] = set()
    first: list[tuple[int, Test]] = []
    for item in tests:
        if item[1][1] not in senders and len(first) < _LEARN:
            senders.add(item[1][1])
            first.append(item)
    return first, [item for item in tests if item not in first]


@dataclass(slots=True)
class _Opened:
    session: SmtpSession | None
    banner: Reply | None = None
    ehlo: Reply | None = None
    error: str | None = None
    connected: bool = False   # the TCP connection was accepted
    connect_seconds: float | None = None  # how long the TCP connect took (about one round trip)
    alongside: int = 0        # other sessions of the probe open when this one was opened
    pipelining: bool = False  # this session's EHLO advertised PIPELINING


def _open(connect: Connect, address: str, port: int, helo: str, timeout: float,
          deadline: float | None = None) -> _Opened:
    """Connect, read the banner, EHLO, all before `deadline` (time.monotonic()); never raises, reports `error`."""
    left = timeout if deadline is None else min(timeout, deadline - time.monotonic())
    if left <= 0:
        return _Opened(None, error=f"not connected to {address}:{port}: the probe's deadline passed")
    started = time.monotonic()
    try:
        stream = connect(address, port, left)
    except OSError as exc:
        return _Opened(None, error=f"cannot connect to {address}:{port}: {exc}")
    session = SmtpSession(stream, timeout=timeout, deadline=deadline)
    opened = _Opened(None, connected=True, connect_seconds=time.monotonic() - started)
    try:
        opened.banner = session.read_reply()
        if opened.banner.klass != 2:
            raise ProbeError(f"server refused the session: {opened.banner}")
        opened.ehlo = _hello(session, helo)
    except ProbeError as exc:
        session.quit()
        opened.error = str(exc)
        return opened
    opened.session, opened.pipelining = session, parse_ehlo(opened.ehlo).pipelining
    return opened


def _starttls(opened: _Opened, context: ssl.SSLContext, helo: str) -> _Opened:
    """STARTTLS and EHLO again on an opened session; on failure the session is ended and `error` says why."""
    session = opened.session
    if session is None:
        return opened
    try:
        reply = session.starttls(context)
        if reply.code != 220:
            raise ProbeError(f"STARTTLS refused: {reply}")
        opened.ehlo = _hello(session, helo)
        opened.pipelining = parse_ehlo(opened.ehlo).pipelining
    except ProbeError as exc:
        session.quit()
        opened.session, opened.error = None, str(exc)
    return opened


class _Link:
    """The plaintext relay sessions of one probe, shared by the threads that run them.

    Each session runs at most `_ROTATE_AFTER` tests and is then ended (MTAs tarpit or drop a session after so
    many errors). A test the session broke during (a drop, timeout, garbage or 421) is retried once on a fresh
    session, and tests it never answered go to a fresh session too; `_MAX_STRIKES` failures in a row (failed
    opens or broken tests, across sessions) give up. Every session of the probe holds one of `_MAX_SESSIONS`
    slots; an open refused while other sessions are open (a server that limits each client's connections) is
    no strike: the slots shrink to the sessions open then, and it is tried again when one is free. `start`
    opens two sessions at once: the second is the retry of the first, else the STARTTLS session (`lend`) or a
    relay session. `results` holds every attempt by the index of its test; `refused`, the senders whose
    MAIL was refused (pipelined groups send them no RCPT).
    """

    def __init__(self, opener: Callable[[], _Opened], pool: ThreadPoolExecutor) -> None:
        self._opener, self._pool = opener, pool
        self._lock = threading.Condition()
        self._ready: deque[Future[_Opened]] = deque()
        self._active, self._slots = 0, _MAX_SESSIONS  # sessions opening or open; how many at once
        self._released = 0.0   # when a session last ended (time.monotonic())
        self._lagged = 0       # refusals taken for a server still counting a session that had ended (at most 3)
        self._tries: dict[int, int] = {}
        self.first: _Opened | None = None
        self.errors: list[str] = []
        self.results: dict[int, RelayAttempt] = {}
        self.refused: set[str] = set()
        self.strikes = self.opens = 0
        self.connected = False

    @property
    def alive(self) -> bool:
        return self.strikes < _MAX_STRIKES

    def start(self) -> _Opened | None:
        """Open two sessions at once; the first one that works (`first`), or None when both failed. A server
        near enough (`_NEAR`) gets at most `_NEAR_SESSIONS` sessions at once from then on."""
        self._active += 2
        self._ready.extend(self._pool.submit(self._paired) for _ in range(2))
        opened = self.take()
        if opened is not None and opened.connect_seconds is not None and opened.connect_seconds < _NEAR:
            self.narrow(_NEAR_SESSIONS)
        return opened

    def _paired(self) -> _Opened:
        opened = self._opener()
        opened.alongside = 1
        return opened

    def lend(self) -> Future[_Opened] | None:
        """The spare session opened by `start` (with its slot: `release` it), for a session that is not a relay
        one; its failure is no strike."""
        with self._lock:
            return self._ready.popleft() if self._ready else None

    def take(self) -> _Opened | None:
        """A fresh relay session (the spare, else a new one) in a slot of its own; None once the link gave up.
        A failed open is a strike unless other sessions were open (`crowded`) or it was the spare and a session
        already worked."""
        while True:
            with self._lock:
                if not self.alive:
                    return None
            ready = self._greeted_first()
            opened = ready.result() if ready is not None else self.open()
            with self._lock:
                self.opens += 1
                self.connected |= opened.connected
                spare_only = ready is not None and self.first is not None and self.first.session is not None
                if self.first is None or self.first.session is None:
                    self.first = opened
                if opened.session is not None:
                    return opened
                self.release()
                if not self.crowded(opened) and not spare_only:
                    self._strike(opened.error or "no session")

    def _greeted_first(self) -> Future[_Opened] | None:
        """Of the sessions `start` opened and nobody took yet, the one that greeted (or failed) first; None when
        none is left. Not simply the first opened: a server may leave one connection in its listen queue until
        another is served (a master process that still counts an old server process idle after a reload
        starts no new one), and waiting on it first would cost the probe a read timeout."""
        while True:
            with self._lock:
                pending = list(self._ready)
                for ready in pending:
                    if ready.done():
                        self._ready.remove(ready)
                        return ready
            if not pending:
                return None
            wait(pending, return_when=FIRST_COMPLETED)

    def open(self) -> _Opened:
        """A new session in a free slot (waits for one); `release` the slot when it has ended."""
        with self._lock:
            self._lock.wait_for(lambda: self._active < self._slots)
            self._active += 1
            alongside = self._active - 1
        opened = self._opener()
        opened.alongside = alongside
        return opened

    def narrow(self, slots: int) -> None:
        """At most `slots` sessions at once from now on (sessions open now stay)."""
        with self._lock:
            self._slots = min(self._slots, slots)

    def release(self) -> None:
        with self._lock:
            self._active -= 1
            self._released = time.monotonic()
            self._lock.notify_all()

    def crowded(self, opened: _Opened) -> bool:
        """After a failed open (its slot released): were other sessions open? Or was it refused at the greeting
        (4xx) while others were open when it was opened, or just after one ended (the server may still count a
        session that has just ended)? Then fewer slots from now on."""
        refused = opened.banner is not None and opened.banner.klass == 4
        with self._lock:
            recent = (opened.alongside or time.monotonic() - self._released < 1.0) and self._lagged < 3
            self._lagged += bool(refused and recent and not self._active)
            if (self._active or (refused and recent)) and opened.connected:
                self._slots = min(self._slots, max(1, self._active))
                return True
            return False

    def run(self, tests: Sequence[tuple[int, Test]], opened: _Opened) -> None:
        """The first group (one test per sender) on `opened`, then, if the link still stands, the other tests in
        sessions at once, as even as can be and at most `_ROTATE_AFTER` each; then the spare is ended."""
        head, rest = _first_group(tests)
        self.work(head, opened)
        if self.alive and rest:
            size = -(-len(rest) // -(-len(rest) // _ROTATE_AFTER))
            for job in [self._pool.submit(self.work, rest[i:i + size]) for i in range(0, len(rest), size)]:
                job.result()
        self.close()

    def work(self, tests: Sequence[tuple[int, Test]], opened: _Opened | None = None) -> None:
        """Run `tests` (index, test) on fresh sessions, the first of them `opened`, until each has an attempt or
        the link gave up."""
        pending = list(tests)
        while pending and (opened := opened or self.take()) is not None and opened.session is not None:
            batch, pending = pending[:_ROTATE_AFTER], pending[_ROTATE_AFTER:]
            with self._lock:
                refused = frozenset(self.refused)
            outcomes = _run(opened.session, [test for _, test in batch], pipelining=opened.pipelining,
                            refused=refused)
            self.release()
            pending = self._settle(batch, outcomes) + pending
            opened = None

    def _settle(self, batch: list[tuple[int, Test]], outcomes: list[RelayAttempt | None]) -> list[tuple[int, Test]]:
        """Record one session's outcomes in order; the tests to run again."""
        again = []
        with self._lock:
            for (index, test), attempt in zip(batch, outcomes, strict=True):
                if attempt is None:
                    again.append((index, test))
                elif attempt.dropped:
                    self.results[index] = attempt
                    self._tries[index] = self._tries.get(index, 0) + 1
                    self._strike(f"form {attempt.form}: connection dropped during {attempt}")
                    if self._tries[index] < 2:
                        again.append((index, test))
                elif _left_out(attempt):
                    self.refused.discard(attempt.mail_from)
                    again.append((index, test))
                else:
                    self.results[index] = attempt
                    self.strikes = 0
                    if attempt.mail_reply is not None and attempt.mail_reply.klass != 2:
                        self.refused.add(attempt.mail_from)
        return again

    def close(self) -> None:
        """End the spare if nobody took it."""
        while (ready := self.lend()) is not None:
            if (session := ready.result().session) is not None:
                session.quit()
            self.release()

    def alone(self, spare: Future[_Opened] | None = None) -> _Opened:
        """A session that is not a relay one: `spare` if it worked, else a new one (refused while others were
        open: once more when a slot is free). When it returns a session, that holds a slot: `release` it once
        the session has ended."""
        opened = spare.result() if spare is not None else self.open()
        for attempt in range(3):
            if opened.session is not None:
                return opened
            self.release()
            crowded = self.crowded(opened)
            if not (crowded or spare is not None):
                return opened
            if crowded:   # a server counting a session that has just ended: a moment for it to notice
                time.sleep(0.05 * (attempt + 1))
            spare, opened = None, self.open()
        if opened.session is None:
            self.release()
        return opened

    def _strike(self, error: str) -> None:
        self.strikes += 1
        if self.strikes == _MAX_STRIKES:
            self.errors.append(f"{error}; giving up after {self.strikes} failures in a row")


def _anonymous(session: SmtpSession, pipelining: bool, helo: str, domain: str
               ) -> tuple[Reply, RelayAttempt | None]:
    """AUTH ANONYMOUS, then (after a 235) form 2 as that anonymous client, then QUIT. Raises ProbeError."""
    reply = session.auth_anonymous(f"probe@{helo}")
    if reply.code != 235:
        return reply, None
    return reply, _run(session, [(2, f"{SENDER}@{domain}", f"{RECIPIENT}@{domain}")], pipelining=pipelining)[0]


def _anonymous_session(opened: _Opened, helo: str, domain: str, errors: list[str]
                       ) -> tuple[Reply | None, RelayAttempt | None]:
    """`_anonymous` in a session of its own, which it then ends; failures land in `errors`."""
    if opened.session is None:
        errors.append(f"AUTH ANONYMOUS session: {opened.error}")
        return None, None
    try:
        return _anonymous(opened.session, opened.pipelining, helo, domain)
    except ProbeError as exc:
        errors.append(f"AUTH ANONYMOUS: {exc}")
        return None, None
    finally:
        opened.session.quit()


@dataclass(slots=True)
class _Tls:
    """What the STARTTLS session saw."""

    auth: tuple[str, ...] | None = None
    anonymous: Reply | None = None
    anon_relay: RelayAttempt | None = None
    errors: list[str] = field(default_factory=list)


def _tls_session(link: _Link, spare: Future[_Opened] | None, helo: str, domain: str,
                 plain_auth: tuple[str, ...]) -> _Tls:
    """EHLO after STARTTLS on a session of its own (the spare, else a new one), and AUTH ANONYMOUS there when
    only TLS offers it. Never raises."""
    seen = _Tls()
    opened = link.alone(spare)
    held = opened.session is not None
    opened = _starttls(opened, scanner_tls_context(), helo)
    try:
        if opened.session is None or opened.ehlo is None:
            seen.errors.append(f"STARTTLS session: {opened.error}")
            return seen
        seen.auth = parse_ehlo(opened.ehlo).auth
        if "ANONYMOUS" in seen.auth and "ANONYMOUS" not in plain_auth:  # only reachable inside TLS
            seen.anonymous, seen.anon_relay = _anonymous_session(opened, helo, domain, seen.errors)
        opened.session.quit()
        return seen
    finally:
        if held:
            link.release()


def _anonymous_alone(link: _Link, helo: str, domain: str, errors: list[str]
                     ) -> tuple[Reply | None, RelayAttempt | None]:
    """`_anonymous_session` in a slot of the link."""
    opened = link.alone()
    held = opened.session is not None
    try:
        return _anonymous_session(opened, helo, domain, errors)
    finally:
        if held:
            link.release()


def probe(address: str, port: int = 25, *, probe_domain: str = "relaytest.example.net",
          local_domain: str | None = None, own_domains: Sequence[str] | None = None, helo: str = HELO,
          timeout: float = 10.0, source_address: str | None = None, tls: bool = True,
          connect: Connect | None = None, budget: float | None = None) -> ProbeResult:
    """Probe a live MTA from here. Never raises for network trouble (it lands in `errors`); raises ValueError
    for a malformed domain or HELO name. Runs nmap's 16 relay forms and `extra_forms` (own-domain senders:
    `own_domains`, default `local_domain`), reconnecting after drops or 421s.

    Each read waits at most `timeout` s, the whole probe `budget` s (default `BUDGET_READS` read timeouts, 60 s;
    a healthy MTA needs well under one): past it, a "deadline" error and unfinished tests judge inconclusive.

    Sessions run at once, at most `_MAX_SESSIONS`: the first one's EHLO decides the rest (STARTTLS, AUTH
    ANONYMOUS, PIPELINING); its first group (one test per sender) runs before the other relay sessions start,
    so a server that fails it is not hammered; the STARTTLS and AUTH ANONYMOUS sessions run beside them.
    `relay_attempts` keep nmap's order whichever session ran them."""
    check_names(probe_domain=probe_domain, local_domain=local_domain, helo=helo)
    own = _own(own_domains, local_domain)
    connect = connect or default_connect(source_address)

    started = time.monotonic()
    deadline = started + (budget if budget is not None else BUDGET_READS * timeout)

    def opener() -> _Opened:
        return _open(connect, address, port, helo, timeout, deadline)

    with ThreadPoolExecutor(_MAX_SESSIONS, thread_name_prefix=f"probe-{address}") as pool:
        link = _Link(opener, pool)
        opened, first = link.start(), link.first
        if opened is None or opened.session is None or first is None or first.ehlo is None:
            link.close()
            return ProbeResult(address, port, first.banner if first else None, source_address,
                               errors=tuple(link.errors), connected=link.connected)
        caps = parse_ehlo(first.ehlo)
        srv = server_name(first.banner, caps, address) if first.banner else address
        stream = opened.session.stream
        source, ip = _endpoint(stream, "getsockname"), _endpoint(stream, "getpeername")
        forms = relay_forms(probe_domain, srv, ip or address) + extra_forms(probe_domain, own)
        local = (0, LOCAL_SENDER, f"postmaster@{local_domain}") if local_domain else None
        tests = list(enumerate([*forms, *([local] if local else [])]))

        anon_errors: list[str] = []
        tls_job = (pool.submit(_tls_session, link, link.lend(), helo, probe_domain, caps.auth)
                   if tls and caps.starttls else None)
        anon_job = (pool.submit(_anonymous_alone, link, helo, probe_domain, anon_errors)
                    if "ANONYMOUS" in caps.auth else None)
        link.run(tests, opened)
        seen = tls_job.result() if tls_job else _Tls()
        anonymous, anon_relay = anon_job.result() if anon_job else (seen.anonymous, seen.anon_relay)

    attempts = tuple(link.results[i] for i in range(len(forms)) if i in link.results)
    errors = [*link.errors, *_shortfall(attempts, len(forms), deadline - started if time.monotonic() >= deadline
                                        else None)]
    local_attempt = None
    if local:  # recorded as dropped if the link gave up
        local_attempt = link.results.get(len(forms), RelayAttempt(local[1], local[2], None, None, True, 0))
    return ProbeResult(address, port, first.banner, source or source_address, caps.auth, caps.starttls,
                       seen.auth, anonymous, attempts, local_attempt, tuple(errors + seen.errors + anon_errors),
                       anon_relay, max(0, link.opens - 1), first.ehlo, connected=True)


def _shortfall(attempts: Sequence[RelayAttempt], planned: int, deadline: float | None) -> list[str]:
    """What kept the relay tests from all being answered: the probe's deadline (`deadline`: its seconds, when it
    passed), tests never tried."""
    found = []
    if deadline is not None:
        found.append(f"the probe's deadline ({deadline:.3g}s) passed after {sum(not a.dropped for a in attempts)} "
                     f"of {planned} relay tests")
    if len(attempts) < planned:
        found.append(f"only {len(attempts)} of {planned} relay tests were tried")
    return found


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


def _one_session(session: SmtpSession, tests: Sequence[Test], pipelining: bool) -> dict[int, RelayAttempt]:
    """Every test on one session that stays open (no reconnect): pipelined, the first test of each sender first,
    then the rest, then any whose RCPT was left out wrongly; else one at a time. The attempts by test index,
    up to the one the session broke during."""
    results: dict[int, RelayAttempt] = {}
    refused: set[str] = set()
    pending, later = _first_group(list(enumerate(tests))) if pipelining else (list(enumerate(tests)), [])
    while pending and not session.broken:
        outcomes = _run(session, [test for _, test in pending], pipelining=pipelining, refused=frozenset(refused),
                        quit=False)
        again = []
        for (index, test), attempt in zip(pending, outcomes, strict=True):
            if attempt is not None and _left_out(attempt):
                refused.discard(attempt.mail_from)
                again.append((index, test))
            elif attempt is not None:
                results[index] = attempt
                if attempt.mail_reply is not None and attempt.mail_reply.klass != 2 and not attempt.dropped:
                    refused.add(attempt.mail_from)
        pending, later = again + later, []
    return results


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
        forms = relay_forms(probe_domain, srv, None) + extra_forms(probe_domain, own)
        local_test = (0, LOCAL_SENDER, f"postmaster@{local_domain}") if local_domain else None
        results = _one_session(session, [*forms, *([local_test] if local_test else [])], caps.pipelining)
        attempts = [results[i] for i in range(len(forms)) if i in results]
        local = results.get(len(forms))
        if (broken := next((a for a in results.values() if a.dropped), None)) is not None:
            raise ProbeDropped(f"local check dropped during {broken}" if broken is local
                               else f"form {broken.form}: connection dropped during {broken}")
        if session.broken:
            raise ProbeDropped(f"the session ended after {len(results)} of {len(forms) + bool(local_test)} tests")
        if "ANONYMOUS" in caps.auth:
            anonymous, anon_relay = _anonymous(session, caps.pipelining, helo, probe_domain)
    except ProbeError as exc:
        errors.append(str(exc))
    finally:
        session.quit()
    return ProbeResult("simulation", 0, banner, xclient_addr, caps.auth, caps.starttls, None, anonymous,
                       tuple(attempts), local, tuple(errors), anon_relay, 0, ehlo, connected=True)
