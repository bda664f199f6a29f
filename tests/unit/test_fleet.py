"""The fleet scheduler: order, forks, waves (canary), the failure budget and interruption, without a network."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from remediate.fleet import run_fleet
from remediate.model import HostResult, Status


@dataclass(frozen=True)
class FakeHost:
    name: str
    address: str = "192.0.2.1"


def fleet(*names: str) -> list[FakeHost]:
    return [FakeHost(n) for n in names]


def worker(outcomes: dict[str, Status], started: list[str] | None = None, delay: float = 0.0):
    def work(host: FakeHost) -> HostResult:
        if started is not None:
            started.append(host.name)
        time.sleep(delay)
        if outcomes.get(host.name) == "crash":
            raise RuntimeError("boom")
        return HostResult(host.name, host.address, outcomes.get(host.name, Status.CHANGED))
    return work


def statuses(results: list[HostResult]) -> list[tuple[str, Status]]:
    return [(r.name, r.status) for r in results]


def test_results_keep_inventory_order_whatever_finishes_first():
    hosts = fleet("a", "b", "c", "d")
    delays = {"a": 0.2, "b": 0.0, "c": 0.1, "d": 0.0}

    def work(host):
        time.sleep(delays[host.name])
        return HostResult(host.name, host.address, Status.CHANGED)

    assert [r.name for r in run_fleet(hosts, work, 4, threading.Event())] == ["a", "b", "c", "d"]


def test_a_failed_canary_wave_stops_the_rest_before_they_start():
    started: list[str] = []
    results = run_fleet(fleet("a", "b", "c"), worker({"a": Status.ROLLED_BACK}, started), 10,
                        threading.Event(), canary=1)
    assert started == ["a"]
    assert statuses(results) == [("a", Status.ROLLED_BACK), ("b", Status.SKIPPED), ("c", Status.SKIPPED)]
    assert "canary wave failed (a)" in results[1].error


def test_a_good_canary_wave_lets_the_rest_run():
    results = run_fleet(fleet("a", "b", "c"), worker({}), 10, threading.Event(), canary=1)
    assert {s for _, s in statuses(results)} == {Status.CHANGED}


def test_the_failure_budget_stops_new_hosts_once_spent():
    started: list[str] = []
    outcomes = {"a": Status.UNREACHABLE, "b": Status.FAILED}
    results = run_fleet(fleet("a", "b", "c", "d"), worker(outcomes, started), 1, threading.Event(),
                        max_failures=2)
    assert started == ["a", "b"]
    assert [s for _, s in statuses(results)][2:] == [Status.SKIPPED, Status.SKIPPED]
    assert "failure budget spent (2 host(s) failed: a, b)" in results[3].error


def test_a_crashing_host_costs_that_host_only():
    results = run_fleet(fleet("a", "b"), worker({"a": "crash"}), 2, threading.Event())
    assert statuses(results) == [("a", Status.FAILED), ("b", Status.CHANGED)]
    assert "internal error" in results[0].error


def test_once_stopped_no_new_host_starts_but_the_one_in_flight_finishes():
    stop = threading.Event()
    started: list[str] = []

    def work(host):
        started.append(host.name)
        stop.set()            # a signal arrives while the first host is in flight
        time.sleep(0.05)
        return HostResult(host.name, host.address, Status.CHANGED)

    results = run_fleet(fleet("a", "b", "c"), work, 1, stop)
    assert started == ["a"]
    assert statuses(results) == [("a", Status.CHANGED), ("b", Status.SKIPPED), ("c", Status.SKIPPED)]
