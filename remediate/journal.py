"""The run journal: a local, append-only, fsynced record of each host's phase in a run.

`runs/RUN_ID/journal.jsonl` holds one JSON object per line: a `run_started` header (command, inventory,
hosts, orchestrator pid), then `{"host", "phase", ...}` records as hosts move through
locked → backed_up → written → validated → reloaded → verified | rolled_back → done, and a final
`run_finished`. A run without `run_finished` whose pid is gone was interrupted (SIGKILL, power loss).

A crash mid-write can leave the last line torn (no line end): the reader ignores it, and the next append
first cuts it off, so it never ends up in the middle. Any other line that is not a record of this journal
(bytes flipped, a line edited, wrong types, a missing key) is refused: `read_journal` raises ConfigError
naming the file and line, and the commands that read journals exit 2 before contacting any host.
"""

from __future__ import annotations

import contextlib
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

from remediate.errors import ConfigError
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
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                end = _cut_torn_tail(fd)
                os.pwrite(fd, line, end)
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


def _cut_torn_tail(fd: int) -> int:
    """Cut off a last line without its line end (a record torn by a crash: it never counted), so the next
    record starts a line of its own; return where it goes (the end of the file)."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if not end or os.pread(fd, 1, end - 1) == b"\n":
        return end
    keep, position = 0, end
    while position > 0:
        start = max(position - 65536, 0)
        newline = os.pread(fd, position - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        position = start
    os.ftruncate(fd, keep)
    return keep


def _text(value: Any) -> bool:
    return isinstance(value, str)


_PHASES = frozenset(p.value for p in Phase)

#: per event, its keys and what each must hold (True: the key is required)
_EVENTS: dict[str, dict[str, tuple[bool, Callable[[Any], bool]]]] = {
    "run_started": {"command": (True, _text), "inventory": (False, _text),
                    "pid": (False, lambda v: v is None or (type(v) is int and v > 0)),
                    "hosts": (False, lambda v: isinstance(v, list) and all(isinstance(h, str) for h in v))},
    "phase": {"host": (True, lambda v: isinstance(v, str) and v != ""),
              "phase": (True, lambda v: v in _PHASES)},
    "run_finished": {},
    "settled": {"how": (False, _text)},
}


def _record(raw: bytes) -> dict[str, Any]:
    """One journal line as a record; ValueError saying what is wrong with it."""
    try:
        rec = json.loads(raw)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    if not isinstance(rec, dict):
        raise ValueError(f"a JSON {type(rec).__name__}, not an object")
    keys = _EVENTS.get(rec["event"]) if isinstance(rec.get("event"), str) else None
    if keys is None:
        raise ValueError(f"unknown event {rec.get('event')!r}")
    if "ts" in rec and type(rec["ts"]) not in (int, float):
        raise ValueError(f"ts {rec['ts']!r} is not a time")
    for key, (required, valid) in keys.items():
        if key not in rec and required:
            raise ValueError(f"{rec['event']} record without {key}")
        if key in rec and not valid(rec[key]):
            raise ValueError(f"{rec['event']} record with {key} {rec[key]!r}")
    return rec


def _records(path: Path) -> list[dict[str, Any]]:
    """Every record of the journal at `path`; a torn last line is left out. ConfigError (file, line) for
    anything else that is not a record."""
    run_id = path.parent.name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the journal of run {run_id}: {exc.strerror or exc}", path=str(path)) from exc
    lines = data.split(b"\n")
    torn = lines.pop()   # b"" when the file ends with a line end, as every complete record does
    records = []
    for number, raw in enumerate(lines, 1):
        try:
            records.append(_record(raw))
        except ValueError as exc:
            raise ConfigError(f"not a journal record ({exc}): the journal of run {run_id} is damaged, so where its "
                              f"hosts stand cannot be read from it. Check them (`remediate backups show {run_id}`, "
                              "`remediate scan`), move the file aside (journal.jsonl.damaged), and run again",
                              path=str(path), line=number) from exc
    with contextlib.suppress(ValueError):   # a torn last line: a crash mid-write, the record never counted
        records.append(_record(torn))
    return records


def read_journal(path: Path | str) -> RunState:
    """What the journal at `path` says; a torn last line (crash mid-write) is ignored. ConfigError naming the
    file and line for a damaged one (see the module docstring)."""
    path = Path(path)
    state = RunState(run_id=path.parent.name)
    for rec in _records(path):
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
