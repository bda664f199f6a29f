"""The fleet scheduler: order, forks, waves (serial, canary), the failure budget, the change window, the
operator's pause and interruption, without a network."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass

import pytest

from remediate.fleet import Waves, Window, parse_serial, run_fleet, wave_sizes
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
                        threading.Event(),
                        waves=Waves(serial=("1", "100%"), strict_first=True))
    assert started == ["a"]
    assert statuses(results) == [("a", Status.ROLLED_BACK), ("b", Status.SKIPPED), ("c", Status.SKIPPED)]
    assert "canary wave failed (a)" in results[1].error


def test_a_good_canary_wave_lets_the_rest_run():
    results = run_fleet(fleet("a", "b", "c"), worker({}), 10, threading.Event(),
                        waves=Waves(serial=("1", "100%"), strict_first=True))
    assert {s for _, s in statuses(results)} == {Status.CHANGED}


def test_the_failure_budget_stops_new_hosts_once_spent():
    started: list[str] = []
    outcomes = {"a": Status.UNREACHABLE, "b": Status.FAILED}
    results = run_fleet(fleet("a", "b", "c", "d"), worker(outcomes, started), 1, threading.Event(),
                        waves=Waves(max_failures=2))
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


# ---------------------------------------------------------------------- waves (Ansible's serial)
@pytest.mark.parametrize(("total", "serial", "sizes"), [
    (10, (), [10]),
    (10, ("3",), [3, 3, 3, 1]),                      # a size; the last wave takes what is left
    (10, ("30%",), [3, 3, 3, 1]),                    # a percentage of the run's hosts
    (10, ("1", "10%", "100%"), [1, 1, 8]),
    (4, ("1", "50%", "100%"), [1, 2, 1]),
    (3, ("10%",), [1, 1, 1]),                        # rounds down, but a wave holds at least one host
    (5, ("1", "2"), [1, 2, 2]),                      # the last item repeats
    (2, ("5",), [2]),
])
def test_wave_sizes_follow_ansible_serial(total, serial, sizes):
    assert wave_sizes(total, serial) == sizes


@pytest.mark.parametrize("bad", ["0", "0%", "101%", "x", "1,,2", "-1", "5 %"])
def test_a_bad_serial_is_refused_naming_the_item(bad):
    with pytest.raises(ValueError, match="not a wave size"):
        parse_serial(bad)


def test_waves_run_in_inventory_order_one_after_the_other():
    started: list[str] = []
    seen: list[tuple[int, int, list[str]]] = []

    class Watch:
        def wave_started(self, number, waves, hosts):
            seen.append((number, waves, list(hosts)))

        def host_started(self, host):
            pass

        def host_done(self, result, failures, tolerated):
            pass

    results = run_fleet(fleet("a", "b", "c", "d"), worker({}, started), 10, threading.Event(),
                        waves=Waves(serial=parse_serial("1,50%,100%")), observer=Watch())
    assert seen == [(1, 3, ["a"]), (2, 3, ["b", "c"]), (3, 3, ["d"])]
    assert started[0] == "a" and started[-1] == "d"
    assert {s for _, s in statuses(results)} == {Status.CHANGED}


def test_max_fail_percent_zero_stops_after_the_first_failed_wave_and_names_the_hosts_never_started():
    started: list[str] = []
    results = run_fleet(fleet("a", "b", "c", "d"), worker({"a": Status.ROLLED_BACK}, started), 10,
                        threading.Event(), waves=Waves(serial=parse_serial("1,50%,100%"), max_fail_percent=0))
    assert started == ["a"]
    assert statuses(results) == [("a", Status.ROLLED_BACK)] + [(n, Status.SKIPPED) for n in "bcd"]
    for r in results[1:]:
        assert r.reason == "not started" and "failure budget spent (1 host(s) failed: a)" in r.error


def test_max_fail_percent_counts_across_the_whole_run_and_must_be_exceeded():
    # 4 hosts, 25%: one failure is tolerated (not exceeded), the second stops new hosts
    started: list[str] = []
    outcomes = {"a": Status.UNREACHABLE, "b": Status.FAILED}
    results = run_fleet(fleet("a", "b", "c", "d"), worker(outcomes, started), 1, threading.Event(),
                        waves=Waves(max_fail_percent=25))
    assert started == ["a", "b"]
    assert [s for _, s in statuses(results)] == [Status.UNREACHABLE, Status.FAILED, Status.SKIPPED, Status.SKIPPED]


def test_hosts_in_flight_finish_when_the_budget_is_spent():
    started: list[str] = []
    delays = {"a": 0.1, "b": 0.3}   # b is in flight when a fails

    def work(host):
        started.append(host.name)
        time.sleep(delays.get(host.name, 0.0))
        status = Status.FAILED if host.name == "a" else Status.CHANGED
        return HostResult(host.name, host.address, status)

    results = run_fleet(fleet("a", "b", "c"), work, 2, threading.Event(),
                        waves=Waves(serial=("2", "1"), max_fail_percent=0))
    assert statuses(results) == [("a", Status.FAILED), ("b", Status.CHANGED), ("c", Status.SKIPPED)]


def test_a_wave_where_every_host_failed_stops_the_run_as_in_ansible():
    results = run_fleet(fleet("a", "b", "c"), worker({"a": Status.FAILED}), 1, threading.Event(),
                        waves=Waves(serial=("1",)))
    assert [s for _, s in statuses(results)] == [Status.FAILED, Status.SKIPPED, Status.SKIPPED]
    assert "every host of wave 1 failed (a)" in results[2].error


def test_no_wave_starts_outside_the_window_and_a_wave_in_flight_finishes():
    clock = iter([dt.time(23, 30), dt.time(2, 5)])    # wave 1 starts inside 22:00-02:00, wave 2 after it
    started: list[str] = []
    results = run_fleet(fleet("a", "b", "c"), worker({}, started), 10, threading.Event(),
                        waves=Waves(serial=("2", "1"), window=Window.parse("22:00-02:00"), clock=lambda: next(clock)))
    assert started == ["a", "b"] or started == ["b", "a"]
    assert statuses(results)[2] == ("c", Status.SKIPPED)
    assert "outside the change window 22:00-02:00" in results[2].error


@pytest.mark.parametrize(("window", "inside", "outside"), [
    ("22:00-02:00", ["22:00", "23:59", "00:00", "01:59"], ["02:00", "12:00", "21:59"]),
    ("09:30-17:00", ["09:30", "16:59"], ["09:29", "17:00", "23:00"]),
])
def test_windows_may_span_midnight(window, inside, outside):
    w = Window.parse(window)
    assert all(w.contains(dt.time.fromisoformat(t)) for t in inside)
    assert not any(w.contains(dt.time.fromisoformat(t)) for t in outside)


@pytest.mark.parametrize("bad", ["22:00", "25:00-01:00", "10:00-10:00", "22-02", "22:00-02:60"])
def test_a_bad_window_is_refused(bad):
    with pytest.raises(ValueError):
        Window.parse(bad)


def test_the_operator_sees_the_first_wave_and_may_stop_the_rest():
    shown: list[list[str]] = []

    def pause(results):
        shown.append([r.name for r in results])
        return False

    results = run_fleet(fleet("a", "b", "c"), worker({}), 10, threading.Event(),
                        waves=Waves(serial=("1", "100%"), pause=pause))
    assert shown == [["a"]]
    assert [s for _, s in statuses(results)] == [Status.CHANGED, Status.SKIPPED, Status.SKIPPED]
    assert "stopped by the operator after the first wave" in results[1].error
