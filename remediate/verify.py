"""The outside probe of one inventory host, judged with what its driver read: the verification step.

`outside_probe` probes the host's SMTP port from this machine (`remediate.probe`) and judges it
(`remediate.verdict`) with the driver's `ProbeContext` (local domain, deferral, served domains) and the
host's own trusted networks; `probe_until_secure` repeats that read-only check after an activation, because
the MTA's old processes may serve a session or two with the old configuration; `await_banner` is the bounded
wait for the MTA to greet at all after an activation (a wedged MTA takes the connection and never does).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from remediate.errors import ProbeError, ProbeTimeout
from remediate.model import Host, ProbeContext, Status
from remediate.probe import HELO, probe
from remediate.smtp import ProbeResult, SmtpSession, implicit_tls_connect
from remediate.verdict import Verdict, judge, merged


def outside_probe(host: Host, context: ProbeContext, expect_local: str,
                  timeout: float | None = None) -> tuple[Verdict, ProbeResult]:
    """Probe the host's SMTP port from here, then each other SMTP service its driver found (`context.services`,
    the same relay tests; TLS from the first byte where the service says so), and judge them as one verdict.
    Each connect and read waits at most `timeout` seconds (default: the host's `probe_timeout`). Returns the
    verdict with the probe port's result. Never raises for network trouble."""
    timeout = timeout or host.probe_timeout
    verdict, result = _probe_port(host, context, host.probe_port, expect_local, timeout)
    for service in context.services:
        if service.port != host.probe_port:
            other, _ = _probe_port(host, context, service.port, "accept", timeout, service.implicit_tls)
            verdict = merged(verdict, service.label, other, submission=service.submission)
    return verdict, result


def _probe_port(host: Host, context: ProbeContext, port: int, expect_local: str, timeout: float,
                implicit_tls: bool = False) -> tuple[Verdict, ProbeResult]:
    result = probe(host.address, port, probe_domain=host.probe_domain,
                   local_domain=context.local_domain, own_domains=context.own_domains or None, helo=HELO,
                   timeout=timeout, tls=not implicit_tls, connect=implicit_tls_connect() if implicit_tls else None)
    # Inside the networks the host is *meant* to trust, relay results prove nothing either way. Inside a
    # relay network wider than that, an accepted relay is exactly the finding.
    verdict = judge(result, deferral=context.deferral,
                    orchestrator_trusted=host.trusts(result.source_address), expect_local=expect_local,
                    served=(host.probe_domain, listed) if (listed := context.serving(host.probe_domain)) else None)
    return verdict, result


def probe_until_secure(host: Host, context: ProbeContext, expect_local: str, attempts: int = 5,
                       first_delay: float = 0.2) -> tuple[Verdict, ProbeResult]:
    """Re-probe (read-only, so retrying is safe) until secure or `attempts` run out, waiting `first_delay`
    seconds, then twice as long each time (0.2, 0.4, 0.8, 1.6: 3 s in all by default). A reload takes effect
    asynchronously: new server processes start with the new configuration while idle old ones may still take
    a connection. A probe that could not connect at all is not retried (no old process is answering: the
    port is closed or filtered, or the link is gone). Returns the last verdict and what the last probe of the
    probe port saw."""
    verdict, result = outside_probe(host, context, expect_local)
    for attempt in range(attempts - 1):
        if verdict.status is Status.SECURE or not result.connected:
            break
        time.sleep(first_delay * 2 ** attempt)
        verdict, result = outside_probe(host, context, expect_local)
    return verdict, result


def proof(result: ProbeResult, expect_local: str) -> str:
    """What a verification probe proved, in a few words: "19/19 relay tests refused, postmaster@ accepted,
    AUTH ANONYMOUS not offered"."""
    parts = []
    if result.relay_attempts:
        refused = sum(not a.accepted for a in result.relay_attempts)
        parts.append(f"{refused}/{len(result.relay_attempts)} relay tests refused")
    local = result.local_attempt
    if local is not None and local.rcpt_reply is not None:
        parts.append(f"postmaster@ {'accepted' if local.accepted else 'refused'}"
                     + ("" if local.accepted == (expect_local == "accept") else " (NOT as the policy expects)"))
    mechs = set(result.ehlo_auth) | set(result.tls_auth or ())
    if result.ehlo is not None:
        parts.append("AUTH ANONYMOUS " + ("offered" if "ANONYMOUS" in mechs else "not offered"))
    return ", ".join(parts) or "the probe saw no SMTP session"


def answering(result: ProbeResult) -> bool:
    """The MTA greeted the probe with a 2xx banner."""
    return result.banner is not None and result.banner.klass == 2


@dataclass(frozen=True, slots=True)
class Silence:
    """Why no banner came: `why` in words; `filtered` when not even a TCP connection was made (a firewall, a
    cut link: nothing the MTA's restart would change)."""

    why: str
    filtered: bool


def await_banner(host: Host, timeout: float, interval: float = 0.5) -> Silence | None:
    """Wait up to `timeout` seconds for the host's SMTP port to greet (any whole reply line counts: the MTA
    answers), reconnecting every `interval` seconds while it refuses or drops. None once it greeted; else
    why not. Read-only: QUIT after the banner, nothing else is sent."""
    deadline = time.monotonic() + timeout
    why, connected = "no attempt", False
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            with socket.create_connection((host.address, host.probe_port), timeout=remaining) as sock:
                connected = True
                session = SmtpSession(sock, timeout=max(0.01, deadline - time.monotonic()))
                session.read_reply()
                session.quit()
                return None
        except ConnectionRefusedError as exc:
            why, connected = f"port {host.probe_port} refused the connection: {exc}", True
        except OSError as exc:
            why = f"cannot connect to port {host.probe_port}: {exc or type(exc).__name__}"
        except ProbeTimeout:
            why = f"port {host.probe_port} took the connection but sent no banner within {timeout:g}s"
        except ProbeError as exc:
            why = f"port {host.probe_port} took the connection but {exc}"
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    return Silence(why, filtered=not connected)
