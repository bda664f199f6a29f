"""The fleet scheduler: each host's phase machine, `forks` at a time, in waves, within a failure budget."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import structlog

from remediate.model import Host, HostResult, Status

log = structlog.get_logger()

FAILURES = frozenset({Status.FAILED, Status.ROLLED_BACK, Status.UNREACHABLE})


def run_fleet(hosts: Iterable[Host], work: Callable[[Host], HostResult], forks: int,
              stop: threading.Event, on_done: Callable[[HostResult], None] | None = None, *,
              canary: int = 0, max_failures: int | None = None) -> list[HostResult]:
    """Run `work` on each host, `forks` at a time, keeping inventory order in the result.

    Waves: the first `canary` hosts run alone first; if any of them fails the rest never start. The
    failure budget: once `max_failures` hosts have failed, rolled back or been unreachable, no new host
    starts. Nor after `stop` is set (SIGINT/SIGTERM). Hosts that never started are `skipped`, with why;
    hosts in flight always finish their own state machine (which completes or rolls back)."""
    hosts = list(hosts)
    results: dict[str, HostResult] = {}
    failures: list[str] = []
    why = ["run interrupted"]
    lock = threading.Lock()

    def halt(reason: str) -> None:
        with lock:
            if not stop.is_set():
                why[0] = reason
                log.warning("fleet_halted", reason=reason)
            stop.set()

    def guarded(host: Host) -> HostResult:
        if stop.is_set():
            result = HostResult(host.name, host.address, Status.SKIPPED, error=f"not started: {why[0]}")
        else:
            try:
                result = work(host)
            except Exception as exc:  # a bug must cost one host, never the fleet
                log.exception("host_crashed", host=host.name)
                result = HostResult(host.name, host.address, Status.FAILED, error=f"internal error: {exc!r}")
            if result.status in FAILURES:
                with lock:
                    failures.append(host.name)
                    count = len(failures)
                if max_failures is not None and count >= max_failures:
                    halt(f"failure budget spent ({count} host(s) failed: {', '.join(failures)})")
        log.info("host_done", host=host.name, status=result.status.value, changed=result.changed,
                 error=result.error)
        if on_done is not None:
            on_done(result)
        return result

    waves = [hosts[:canary], hosts[canary:]] if canary > 0 else [hosts]
    with ThreadPoolExecutor(max_workers=max(1, forks)) as pool:
        for i, wave in enumerate(waves):
            for host, result in zip(wave, pool.map(guarded, wave), strict=True):
                results[host.name] = result
            if i == 0 and canary > 0 and any(results[h.name].status in FAILURES for h in wave):
                halt(f"canary wave failed ({', '.join(h.name for h in wave if results[h.name].status in FAILURES)})")
    return [results[h.name] for h in hosts]
