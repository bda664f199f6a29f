"""`phases.bring_up`: every activation ends with the MTA greeting, or a restart, or a clear error, in bounded
time. The MTA is a purpose-built SMTP server that takes connections and never greets until "restarted"."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile_smtp import Behaviour, HostileSmtp  # noqa: E402

from remediate.errors import CommandError, CommandTimeout, DriverError, TransportError  # noqa: E402
from remediate.model import Host  # noqa: E402
from remediate.mta.playbook import Restart  # noqa: E402
from remediate.phases import bring_up  # noqa: E402

WAIT = 1.0   # seconds: the banner wait in these tests


class Mta:
    """A driver whose activation does `on_activate` and whose restart makes the server greet (or not)."""

    def __init__(self, server: Behaviour, *, on_activate: Exception | None = None, restarts: bool = True,
                 heals: bool = True) -> None:
        self.server, self.on_activate, self.restarts, self.heals = server, on_activate, restarts, heals
        self.playbook = SimpleNamespace(restart=Restart(answer_timeout=WAIT, command_timeout=WAIT))
        self.calls: list[str] = []

    def activate(self, shell: Any) -> None:
        self.calls.append("activate")
        if self.on_activate is not None:
            raise self.on_activate

    def restart(self, shell: Any) -> tuple[str, ...]:
        self.calls.append("restart")
        if not self.restarts:
            raise DriverError("the test playbook has no restart")
        self.server.silent = not self.heals
        return ("`mta stop` hung for 1s", "process 42 did not exit: killed", "started")


def _bring_up(mta: Mta) -> tuple[tuple[str, ...], float]:
    with HostileSmtp(mta.server) as server:
        host = Host("mx1", server.address[0], probe_port=server.address[1])
        started = time.monotonic()
        try:
            return bring_up(None, mta, host, structlog.get_logger()), time.monotonic() - started  # type: ignore[arg-type]
        finally:
            mta.elapsed = time.monotonic() - started  # type: ignore[attr-defined]


def test_an_mta_that_greets_is_left_alone() -> None:
    mta = Mta(Behaviour())
    notes, elapsed = _bring_up(mta)
    assert notes == () and mta.calls == ["activate"] and elapsed < WAIT


def test_an_mta_that_takes_connections_and_never_greets_is_restarted_and_the_report_says_why() -> None:
    mta = Mta(Behaviour(silent=True))
    notes, elapsed = _bring_up(mta)
    assert mta.calls == ["activate", "restart"]
    assert len(notes) == 1 and notes[0].startswith("escalated to a restart: no SMTP banner after activation")
    assert "sent no banner within 1s" in notes[0] and "killed" in notes[0]
    assert elapsed < 2 * WAIT + 1


def test_an_activation_that_hangs_is_escalated_too() -> None:
    mta = Mta(Behaviour(), on_activate=CommandTimeout("mx1: `mta reload` did not finish within 1s"))
    notes, _ = _bring_up(mta)
    assert mta.calls == ["activate", "restart"] and "did not finish" in notes[0]


def test_an_mta_that_refuses_the_activation_is_not_restarted() -> None:
    """A refused reload is the configuration's fault: the caller rolls back (no restart with a bad config)."""
    mta = Mta(Behaviour(silent=True), on_activate=CommandError("mx1", "mta reload", 1, "fatal: bad config"))
    with pytest.raises(CommandError):
        _bring_up(mta)
    assert mta.calls == ["activate"]


@pytest.mark.parametrize(("restarts", "heals", "message"), [
    (True, False, "restarted (`mta stop` hung for 1s; process 42 did not exit: killed; started) and still no banner"),
    (False, False, "and the test playbook has no restart"),
])
def test_an_mta_still_silent_after_the_restart_is_a_clear_error_in_bounded_time(restarts, heals, message) -> None:
    mta = Mta(Behaviour(silent=True), restarts=restarts, heals=heals)
    with pytest.raises(TransportError, match="no SMTP banner after activation") as caught:
        _bring_up(mta)
    assert message in str(caught.value)
    assert mta.elapsed < 2 * WAIT + 1  # type: ignore[attr-defined]


def test_a_port_this_machine_cannot_reach_at_all_is_noted_not_restarted() -> None:
    """A firewall or a cut link between here and the host is not the MTA's doing: restarting it would change
    nothing (verification then decides, as for any unreachable port). Stand-in for a filtered port: a
    listener whose backlog is full, so the kernel drops every further SYN and connecting times out."""
    mta = Mta(Behaviour())
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        with socket.create_connection(full.getsockname(), timeout=1):   # fills the backlog
            started = time.monotonic()
            notes = bring_up(None, mta, Host("mx1", "127.0.0.1", probe_port=full.getsockname()[1]),  # type: ignore[arg-type]
                             structlog.get_logger())
    assert mta.calls == ["activate"] and time.monotonic() - started < WAIT + 1
    assert len(notes) == 1 and "no connection either" in notes[0] and "not restarted" in notes[0]


def test_verification_does_not_re_probe_a_port_it_cannot_connect_to() -> None:
    """Re-probes (0.2 + 0.4 + 0.8 + 1.6 s of backoff) are for old MTA processes still answering after a reload;
    a port nothing listens on (closed, filtered, a cut link) ends the verification at once, never secure."""
    from remediate.model import ProbeContext, Status
    from remediate.verify import probe_until_secure

    with socket.socket() as sock:   # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = Host("mx1", "127.0.0.1", probe_port=port, probe_timeout=1)
    started = time.monotonic()
    verdict, result = probe_until_secure(host, ProbeContext(local_domain="mx1.example"), "accept")
    assert not result.connected and verdict.status is not Status.SECURE
    assert time.monotonic() - started < 1.5   # before: 3 s of re-probes
