"""Ansible callback: wall time of each task (all hosts, linear strategy) into $BENCH_ANSIBLE_TIMING (JSON),
so the benchmark can say where Ansible spends its time. Enabled only by the benchmark's ansible.cfg."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: bench_timing
    type: aggregate
    short_description: per-task wall time for bench/run.py
    description: writes [[task name, seconds], ...] to the file named by BENCH_ANSIBLE_TIMING
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.started = time.perf_counter()
        self.current: tuple[str, float] | None = None
        self.tasks: list[tuple[str, float]] = []

    def _close(self) -> None:
        if self.current:
            name, start = self.current
            self.tasks.append((name, round(time.perf_counter() - start, 3)))
            self.current = None

    def _open(self, name: str) -> None:
        self._close()
        self.current = (name, time.perf_counter())

    def v2_playbook_on_task_start(self, task, is_conditional):  # type: ignore[no-untyped-def]
        self._open(task.get_name())

    def v2_playbook_on_handler_task_start(self, task):  # type: ignore[no-untyped-def]
        self._open("handler: " + task.get_name())

    def v2_playbook_on_stats(self, stats):  # type: ignore[no-untyped-def]
        self._close()
        path = os.environ.get("BENCH_ANSIBLE_TIMING")
        if path:
            with open(path, "w") as fh:
                json.dump({"tasks": self.tasks, "callback_seconds": round(time.perf_counter() - self.started, 3)},
                          fh)
