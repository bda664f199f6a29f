"""The run journal: a local, append-only, fsynced record of each host's phase in a run.

`runs/RUN_ID/journal.jsonl` holds one JSON object per line: a `run_started` header (command, inventory,
hosts, orchestrator pid), then `{"host", "phase", ...}` records as hosts move through
locked → backed_up → written → validated → reloaded → verified | rolled_back → done, and a final
`run_finished`. A run without `run_finished` whose pid is gone was interrupted (SIGKILL, power loss).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediate.model import Phase


class Journal:
    """Append-only writer for one run. Thread-safe; every record is fsynced before it returns."""

    def __init__(self, runs_dir: Path | str, run_id: str) -> None:
        self.dir = Path(runs_dir) / run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "journal.jsonl"
        self.run_id = run_id
        self._lock = threading.Lock()
        #: told (host, phase) after each phase record is durable (a progress display)
        self.observer: Callable[[str, str], None] | None = None

    def _append(self, record: dict[str, Any]) -> None:
        record = {"ts": time.time(), **record}
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def start(self, command: str, inventory: str, hosts: list[str]) -> None:
        self._append({"event": "run_started", "run_id": self.run_id, "command": command,
                      "inventory": os.path.abspath(inventory), "hosts": hosts, "pid": os.getpid(),
                      "orchestrator": socket.gethostname()})

    def record(self, host: str, phase: Phase, **detail: Any) -> None:
        """Append (and fsync) that `host` reached `phase`, with `detail` (JSON-serialisable)."""
        self._append({"event": "phase", "host": host, "phase": Phase(phase).value, **detail})
        _injected_fault(host, Phase(phase).value)
        if self.observer is not None:
            self.observer(host, Phase(phase).value)

    def finish(self) -> None:
        self._append({"event": "run_finished"})


@dataclass(slots=True)
class RunState:
    """What a journal says about one run."""

    run_id: str
    command: str = ""
    inventory: str = ""
    pid: int | None = None
    started: float = 0.0
    finished: bool = False
    phases: dict[str, str] = field(default_factory=dict)     # host -> last phase
    outcomes: dict[str, str] = field(default_factory=dict)   # host -> last phase before `done`
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """True while the orchestrator that wrote it still runs on this machine."""
        if self.finished or not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @property
    def interrupted(self) -> bool:
        """Not finished and its orchestrator is gone, with a host past its lock and not settled."""
        unsettled = any(p not in ("done", "started") for p in self.phases.values())
        return not self.finished and not self.live and unsettled


def _injected_fault(host: str, phase: str) -> None:
    """Fault injection for the crash-safety tests, off unless REMEDIATE_FAULT is set.

    `REMEDIATE_FAULT=[HOST/]PHASE:kill` SIGKILLs this process right after PHASE is durably recorded;
    `...:wait=PATH` blocks there until PATH exists (so a test can cut a link at an exact point)."""
    spec = os.environ.get("REMEDIATE_FAULT")
    if not spec:
        return
    where, _, action = spec.partition(":")
    if where not in (phase, f"{host}/{phase}"):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("wait="):
        while not os.path.exists(action[5:]):
            time.sleep(0.05)


def read_journal(path: Path | str) -> RunState:
    """Parse a journal; a torn last line (crash mid-write) is ignored."""
    path = Path(path)
    state = RunState(run_id=path.parent.name)
    for raw in path.read_bytes().splitlines():
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if rec.get("event") == "run_started":
            state.command, state.inventory = rec.get("command", ""), rec.get("inventory", "")
            state.pid, state.started = rec.get("pid"), rec.get("ts", 0.0)
        elif rec.get("event") == "phase":
            state.phases[rec["host"]] = rec["phase"]
            if rec["phase"] != "done":
                state.outcomes[rec["host"]] = rec["phase"]
            state.details.setdefault(rec["host"], {}).update(
                {k: v for k, v in rec.items() if k not in ("event", "host", "ts")})
        elif rec.get("event") == "run_finished":
            state.finished = True
    return state


def list_runs(runs_dir: Path | str) -> list[RunState]:
    """Every run with a journal, oldest first (run ids sort by time)."""
    base = Path(runs_dir)
    if not base.is_dir():
        return []
    return [read_journal(p / "journal.jsonl") for p in sorted(base.iterdir())
            if (p / "journal.jsonl").is_file()]


def mark_settled(runs_dir: Path | str, run_id: str, how: str) -> None:
    """Close an interrupted run after it was rolled back or resumed (`how` says which)."""
    journal = Journal(runs_dir, run_id)
    journal._append({"event": "settled", "how": how})
    journal.finish()
