"""Timing one command: wall seconds, CPU seconds of its whole process tree, peak memory.

The benchmark process makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so a process that
daemonizes during a run (Ansible's ControlPersist ssh masters) is reparented to it instead of init. After
the timed command exits, `timed` ends the daemons the run left (by pid, only those whose command line
carries the run's marker), reaps them, and counts the CPU of everything reaped during the run:
the delta of getrusage(RUSAGE_CHILDREN), i.e. the command, every descendant it waited for, and the
orphans reaped here. Peak memory is the command tree's ru_maxrss from os.wait4: the largest single
process (Linux reports the maximum, not the sum).

Only the main thread may call `timed` or `reap_orphans`, with no other thread starting processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True, slots=True)
class Measurement:
    wall: float        # seconds, start to the command's exit (daemon clean-up not included)
    cpu: float         # user + sys seconds of the command's tree and the daemons it left
    maxrss_mib: float  # largest single process of the command's tree
    rc: int


def become_subreaper() -> None:
    """Make orphaned descendants of this process its children (Linux >= 3.4)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def reap_orphans() -> None:
    """Reap every child that has already exited (orphans reparented here), without blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def own_children() -> list[int]:
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def end_daemons(marker: str, timeout: float = 10.0) -> int:
    """SIGTERM this process's children whose command line contains `marker` (daemons a run left behind,
    reparented here), and reap them. Returns how many were ended."""
    ended = []
    for pid in own_children():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            ended.append(pid)
    deadline = time.monotonic() + timeout
    for pid in ended:
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.02)
    return len(ended)


def timed(argv: list[str], *, cwd: str | Path, log: Path, env: dict[str, str] | None = None,
          daemon_marker: str | None = None) -> Measurement:
    """Run argv (stdin closed, stdout and stderr to `log`) and measure it; see the module docstring."""
    reap_orphans()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if daemon_marker:
        end_daemons(daemon_marker)
    reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measurement(wall=wall, cpu=cpu, maxrss_mib=usage.ru_maxrss / 1024, rc=proc.returncode)
