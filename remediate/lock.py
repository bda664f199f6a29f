"""The per-host lock: one changing run per host at a time.

The lock is a small JSON file (run id, orchestrator, pid, time) created with O_EXCL at the shell's
`lock_path`. A lock left by a dead run is taken over when that run is the one being rolled back or
resumed (`adopt`), and any other dead run's lock only with `break_lock` once it is older than `max_age`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from remediate.errors import CommandError, LockError, RemediateError
from remediate.shell import Read, Shell


def acquire(shell: Shell, run_id: str, *, break_lock: bool = False, max_age: float = 3600,
            adopt: frozenset[str] = frozenset(), log: Any = None) -> bytes:
    """Take the host's lock atomically; returns the lock file's bytes. LockError names the holder when it
    is taken."""
    me = json.dumps({"run_id": run_id, "orchestrator": socket.gethostname(), "pid": os.getpid(),
                     "time": time.time()}).encode()
    if shell.create_exclusive(shell.lock_path, me):
        return me
    held = _held(shell)
    age = time.time() - float(held.get("time", 0))
    live = _live(held)
    adoptable = held.get("run_id") in adopt and not live
    if adoptable or (break_lock and age > max_age and not live):
        if log is not None:
            log.warning("lock_adopted" if adoptable else "lock_broken", held_by=held.get("run_id"), age_s=int(age))
        shell.remove(shell.lock_path)
        if shell.create_exclusive(shell.lock_path, me):
            return me
    raise LockError(f"{shell.name}: locked by run {held.get('run_id', '?')} from {held.get('orchestrator', '?')} "
                    f"pid {held.get('pid', '?')}, {int(age)}s ago ({shell.lock_path}); wait for it, or if that run "
                    f"is dead and the lock is older than {int(max_age)}s, use --break-lock")


def release(shell: Shell, mine: bytes) -> None:
    """Remove the lock if (and only if) it is still the one `acquire` wrote (`mine`, its bytes): one round
    trip."""
    shell.remove_if_same(shell.lock_path, mine)


@contextmanager
def held(shell: Shell, run_id: str, *, log: Any = None, **how: Any) -> Iterator[None]:
    """`acquire` for the block, `release` after it whatever happens (a failed release is logged)."""
    mine = acquire(shell, run_id, log=log, **how)
    try:
        yield
    finally:
        try:
            release(shell, mine)
        except RemediateError as exc:
            if log is not None:
                log.warning("lock_not_released", error=str(exc))


def clear_dead(shell: Shell, run_id: str, log: Any = None) -> bool:
    """Remove a lock that the (dead) run `run_id` left behind; True if there was one."""
    holder = _held(shell)
    if holder.get("run_id") != run_id or _live(holder):
        return False
    shell.remove(shell.lock_path)
    if log is not None:
        log.warning("dead_lock_cleared", held_by=run_id)
    return True


def _held(shell: Shell) -> dict[str, Any]:
    """The lock's holder ({} when there is no lock, or it cannot be read or parsed)."""
    try:
        data = shell.gather([Read(shell.lock_path, missing_ok=True)])[0]
        holder = json.loads(data) if data is not None else {}
    except (ValueError, CommandError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _live(holder: dict[str, Any]) -> bool:
    """The holder is an orchestrator process still running on this machine."""
    if holder.get("orchestrator") != socket.gethostname():
        return False
    try:
        os.kill(int(holder.get("pid")), 0)  # type: ignore[arg-type]
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True
