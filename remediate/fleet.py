"""The fleet scheduler: each host's phase machine, `forks` at a time, in waves, within a failure budget.

Waves follow Ansible's `serial`: a size, a percentage of the run's hosts, or a list of them (`1,10%,100%`;
the last one repeats until every host is placed), hosts taken in inventory order; a percentage rounds down,
but a wave holds at least one host. The failure budget follows `max_fail_percentage`, counted across the
whole run: once more than P percent of the run's hosts failed, rolled back or were unreachable, no new host
starts; and, as in Ansible, a run with waves stops when every host of a wave failed. `max_failures` (N)
stops new hosts once N failed. `--canary K` is `serial K,100%` whose first wave may not fail at all. A
change window (`22:00-02:00`, local time) is checked before each wave: no new wave starts outside it; a
wave in flight finishes. Hosts in flight always finish their own state machine (which completes or rolls
back); hosts never started are `skipped`, reason `not started`, with why.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from remediate.model import Host, HostResult, Status

log = structlog.get_logger()

FAILURES = frozenset({Status.FAILED, Status.ROLLED_BACK, Status.UNREACHABLE})
_SERIAL_ITEM = re.compile(r"(\d+)(%?)")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def parse_serial(text: str) -> tuple[str, ...]:
    """`5`, `25%` or `1,10%,100%` -> its items. ValueError saying what a wave size is otherwise."""
    items = tuple(item.strip() for item in text.split(","))
    for item in items:
        match = _SERIAL_ITEM.fullmatch(item)
        if match is None or int(match.group(1)) == 0 or (match.group(2) and int(match.group(1)) > 100):
            raise ValueError(f"{item!r} is not a wave size (a number of hosts >= 1, or a percentage 1%..100%; "
                             "a list like 1,10%,100%)")
    return items


def wave_sizes(total: int, serial: Sequence[str]) -> list[int]:
    """The size of each wave for `total` hosts: Ansible's batches (percentages of `total` rounded down, at
    least 1; the last item repeats; the last wave takes what is left)."""
    if not serial:
        return [total] if total else []
    sizes: list[int] = []
    placed, i = 0, 0
    while placed < total:
        item = serial[min(i, len(serial) - 1)]
        size = max(1, total * int(item[:-1]) // 100) if item.endswith("%") else int(item)
        size = min(size, total - placed)
        sizes.append(size)
        placed, i = placed + size, i + 1
    return sizes


@dataclass(frozen=True, slots=True)
class Window:
    """A daily change window in local time, `start` inclusive, `end` exclusive; may span midnight."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> Window:
        """`22:00-02:00` -> Window. ValueError naming the expected form otherwise."""
        parts = text.split("-")
        matches = [_CLOCK.fullmatch(p.strip()) for p in parts]
        if len(parts) != 2 or not all(matches):
            raise ValueError(f"{text!r} is not a window (HH:MM-HH:MM, local time, e.g. 22:00-02:00)")
        start, end = (dt.time(int(m.group(1)), int(m.group(2))) for m in matches if m)
        if start == end:
            raise ValueError(f"{text!r} is an empty window (start and end are the same)")
        return cls(start, end)

    def contains(self, moment: dt.time) -> bool:
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _local_time() -> dt.time:
    return dt.datetime.now().time()


@dataclass(frozen=True, slots=True)
class Waves:
    """How a run is paced: `serial` (wave sizes, `parse_serial`), the failure budget (`max_fail_percent`
    of the run's hosts, or `max_failures` hosts), `strict_first` (the canary rule: any failure in the first
    wave stops the run), the change `window`, and `pause`, asked after the first wave with its results
    (False stops the run). `clock` gives the local time of day (for tests)."""

    serial: tuple[str, ...] = ()
    max_fail_percent: float | None = None
    max_failures: int | None = None
    strict_first: bool = False
    window: Window | None = None
    pause: Callable[[list[HostResult]], bool] | None = None
    clock: Callable[[], dt.time] = field(default=_local_time)

    def tolerated(self, total: int) -> int | None:
        """How many failures the run tolerates (one more stops it), or None without a budget."""
        limits = []
        if self.max_fail_percent is not None:
            limits.append(int(self.max_fail_percent * total // 100))
        if self.max_failures is not None:
            limits.append(self.max_failures - 1)
        return min(limits) if limits else None


class Observer(Protocol):
    """What a progress display hears from the scheduler (called from worker threads)."""

    def wave_started(self, number: int, waves: int, hosts: Sequence[str]) -> None: ...
    def host_started(self, host: str) -> None: ...
    def host_done(self, result: HostResult, failures: int, tolerated: int | None) -> None: ...


class Silent:
    """An observer that shows nothing."""

    def wave_started(self, number: int, waves: int, hosts: Sequence[str]) -> None:
        """Nothing to show."""

    def host_started(self, host: str) -> None:
        """Nothing to show."""

    def host_done(self, result: HostResult, failures: int, tolerated: int | None) -> None:
        """Nothing to show."""


class _Run:
    """The shared state of one scheduled run: results, failures, and why it halted."""

    def __init__(self, total: int, waves: Waves, stop: threading.Event, observer: Observer) -> None:
        self.total, self.waves, self.stop, self.observer = total, waves, stop, observer
        self.results: dict[str, HostResult] = {}
        self.failures: list[str] = []
        self.why = "run interrupted"
        self.lock = threading.Lock()

    def halt(self, reason: str) -> None:
        with self.lock:
            if not self.stop.is_set():
                self.why = reason
                log.warning("fleet_halted", reason=reason)
            self.stop.set()

    def count(self, result: HostResult) -> None:
        if result.status not in FAILURES:
            return
        with self.lock:
            self.failures.append(result.name)
            count, names = len(self.failures), ", ".join(self.failures)
        tolerated = self.waves.tolerated(self.total)
        if tolerated is not None and count > tolerated:
            self.halt(f"failure budget spent ({count} host(s) failed: {names}) - more than the {tolerated} "
                      f"tolerated of {self.total}")

    def guarded(self, host: Host, work: Callable[[Host], HostResult]) -> HostResult:
        if self.stop.is_set():
            result = HostResult(host.name, host.address, Status.SKIPPED, error=f"not started: {self.why}",
                                reason="not started")
        else:
            self.observer.host_started(host.name)
            try:
                result = work(host)
            except Exception as exc:  # a bug must cost one host, never the fleet
                log.exception("host_crashed", host=host.name)
                result = HostResult(host.name, host.address, Status.FAILED, error=f"internal error: {exc!r}")
            self.count(result)
        log.info("host_done", host=host.name, status=result.status.value, changed=result.changed,
                 error=result.error)
        self.observer.host_done(result, len(self.failures), self.waves.tolerated(self.total))
        return result

    def after_wave(self, number: int, wave: list[Host], more: bool) -> None:
        """The rules between waves: the canary rule, a wholly failed wave, the operator's pause."""
        failed = [h.name for h in wave if self.results[h.name].status in FAILURES]
        if number == 1 and self.waves.strict_first and failed:
            self.halt(f"canary wave failed ({', '.join(failed)})")
        elif more and self.waves.serial and failed and len(failed) == len(wave):
            self.halt(f"every host of wave {number} failed ({', '.join(failed)})")
        elif number == 1 and more and self.waves.pause is not None and not self.stop.is_set() \
                and not self.waves.pause([self.results[h.name] for h in wave]):
            self.halt("stopped by the operator after the first wave")


def run_fleet(hosts: Iterable[Host], work: Callable[[Host], HostResult], forks: int,
              stop: threading.Event, *, waves: Waves | None = None,
              observer: Observer | None = None) -> list[HostResult]:
    """Run `work` on each host, `forks` at a time, wave by wave (`Waves`), keeping inventory order in
    the result. Once the budget is spent, the window is closed, the operator said stop, or `stop` is set
    (SIGINT/SIGTERM), no new host starts; hosts never started are `skipped`, reason `not started`."""
    hosts = list(hosts)
    waves = waves or Waves()
    run = _Run(len(hosts), waves, stop, observer or Silent())
    sizes = wave_sizes(len(hosts), waves.serial)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    with ThreadPoolExecutor(max_workers=max(1, forks)) as pool:
        for number, (start, size) in enumerate(zip(starts, sizes, strict=True), 1):
            wave = hosts[start:start + size]
            if waves.window is not None and not stop.is_set() and not waves.window.contains(waves.clock()):
                run.halt(f"outside the change window {waves.window} (local time)")
            if not stop.is_set():
                run.observer.wave_started(number, len(sizes), [h.name for h in wave])
            for host, result in zip(wave, pool.map(lambda h: run.guarded(h, work), wave), strict=True):
                run.results[host.name] = result
            run.after_wave(number, wave, more=number < len(sizes))
    return [run.results[h.name] for h in hosts]
