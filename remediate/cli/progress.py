"""What a run shows while it works: hosts done, the hosts in flight with their phase, failures against the
budget, the current wave. A live bar on a terminal; plain lines on stderr otherwise (logs, CI)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from remediate.fleet import FAILURES
from remediate.model import HostResult


class FleetProgress:
    """A `fleet.Observer` (and a journal observer, for phases) drawing on `console` (stderr).

    `lines`: print a plain line per event (wave started, phase reached, host done) instead of a live bar;
    the default is a bar on a terminal and lines elsewhere when `lines_when_piped`."""

    def __init__(self, command: str, total: int, console: Console, *, lines_when_piped: bool = False) -> None:
        self.command, self.total, self.console = command, total, console
        self.live = console.is_terminal
        self.lines = not self.live and lines_when_piped
        self.in_flight: dict[str, str] = {}
        self.done = 0
        self.failures = 0
        self.tolerated: int | None = None
        self.wave = ""
        self._lock = threading.Lock()
        self._bar = Progress(TextColumn(command), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             TextColumn("{task.fields[state]}"), console=console, transient=True,
                             disable=not self.live)
        self._task: TaskID | None = None

    def __enter__(self) -> FleetProgress:
        self._bar.__enter__()
        self._task = self._bar.add_task(self.command, total=self.total, state="")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._bar.__exit__(kind, exc, tb)

    def suspended(self, ask: Callable[[], bool]) -> bool:
        """`ask()` with the live bar put away (a question on the terminal), then the bar back."""
        if not self.live:
            return ask()
        self._bar.stop()
        try:
            return ask()
        finally:
            self._bar.start()

    # ------------------------------------------------------------------ events
    def wave_started(self, number: int, waves: int, hosts: Sequence[str]) -> None:
        with self._lock:
            self.wave = f"wave {number}/{waves}" if waves > 1 else ""
        self._say(f"{self.command}: wave {number}/{waves} started: {', '.join(hosts)}")
        self._draw()

    def host_started(self, host: str) -> None:
        with self._lock:
            self.in_flight[host] = "connecting"
        self._draw()

    def phase(self, host: str, phase: str) -> None:
        """A journal record: `host` reached `phase`."""
        with self._lock:
            if host in self.in_flight:
                self.in_flight[host] = phase
        self._say(f"{self.command}: {host}: {phase}")
        self._draw()

    def host_done(self, result: HostResult, failures: int, tolerated: int | None) -> None:
        with self._lock:
            self.in_flight.pop(result.name, None)
            self.done += 1
            self.failures, self.tolerated = failures, tolerated
        mark = " (counts against the budget)" if result.status in FAILURES else ""
        self._say(f"{self.command}: {result.name}: {result.status.value}{mark}; {self.done}/{self.total} done, "
                  f"{self._budget()}")
        if self._task is not None:
            self._bar.advance(self._task)
        self._draw()

    # ------------------------------------------------------------------ drawing
    def _budget(self) -> str:
        if self.tolerated is None:
            return f"failures {self.failures}"
        return f"failures {self.failures}/{self.tolerated} tolerated"

    def state(self) -> str:
        """The one-line state: wave, failures against the budget, hosts in flight with their phase."""
        with self._lock:
            flight = ", ".join(f"{h} {p}" for h, p in sorted(self.in_flight.items()))
            parts = [p for p in (self.wave, self._budget(), f"in flight: {flight}" if flight else "") if p]
        return " | ".join(parts)

    def _draw(self) -> None:
        if self._task is not None and self.live:
            self._bar.update(self._task, state=self.state())

    def _say(self, line: str) -> None:
        if self.lines:
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)
