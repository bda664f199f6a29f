"""Faults of the MTA itself, on the lab: each host ends remediated and verified, or exactly as it was with the
MTA answering, in bounded time, and the report says what was escalated and why.

Fault 14, an MTA wedged on reload: the `wedged-reload` host's `postfix reload` stops the master (port 25
takes connections and never greets; a second reload and `postfix stop` hang), as a postlogd-logging Postfix
does where the postlog socket is full (remediate/lab/fault_scenarios.py). Before the fix, apply waited out the
verification (~86 s), then the rollback's reload hung for the whole command timeout and the host was left
ROLLBACK FAILED, not answering, after 3.5 minutes.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remediate.mta.playbook import PLAYBOOK_DIR
from tests.conftest import run_cli
from tests.integration.checks import FOREIGN, master_pid, rcpt, snapshot, wrap_postfix
from tests.reliability import Stopwatch, lost_bytes

#: "the host ends answering within about a minute of the first missed banner"
ANSWERING_WITHIN = 60.0
#: The escalation is tested with the shipped playbook's steps and shorter waits (the shipped 20 s/15 s/5 s
#: add up to under a minute: tests/unit/test_playbook.py), so the wedged paths take seconds, not minutes.
SHORT_WAITS = {"answer_timeout": 8, "command_timeout": 8, "stop_timeout": 2}


@pytest.fixture(scope="module")
def quick_playbooks(tmp_path_factory) -> Path:
    """The shipped playbooks, with SHORT_WAITS in postfix.yaml's restart block."""
    directory = tmp_path_factory.mktemp("playbooks")
    for source in PLAYBOOK_DIR.glob("*.yaml"):
        text = source.read_text()
        if source.name == "postfix.yaml":
            for key, seconds in SHORT_WAITS.items():
                text, count = re.subn(rf"(?m)^(  {key}:) *\d+", rf"\g<1> {seconds}", text)
                assert count == 1, key
        (directory / source.name).write_text(text)
    return directory


@pytest.fixture
def wedged(lab, tmp_path):
    """The wedged-reload host fresh in its scenario: (name, its original /etc/postfix, main.cf's bytes)."""
    name = next(h.name for h in lab.hosts if h.scenario == "wedged-reload")
    lab.reset(name)
    original = {lab.path(name, "/etc/postfix/main.cf"): lab.path(name, "/etc/postfix/main.cf").read_bytes()}
    yield name, snapshot(lab.path(name, "/")), original
    lab.reset(name)


def _run(lab, tmp_path: Path, name: str, *args: str, playbooks: Path | None = None) -> tuple[dict[str, object], float]:
    extra = ("--playbooks", str(playbooks)) if playbooks else ()
    with Stopwatch() as watch:
        proc = run_cli(*args, "--yes", "-i", str(lab.inventory_path), "--limit", name, "--report", "r.json",
                       *extra, cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return json.loads((tmp_path / "r.json").read_text())["hosts"][0], watch.seconds


def _escalations(tmp_path: Path, run_id: str) -> list[dict[str, object]]:
    log = (tmp_path / "runs" / run_id / "log.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, log) if event.get("event") == "mta_restarted"]


def _answering(lab, name: str) -> bool:
    host = lab.host(name)
    return rcpt(host.address, f"postmaster@{host.fqdn}") == 250


def test_a_reload_that_wedges_the_mta_is_escalated_to_a_restart_and_the_change_verified(
        lab, wedged, tmp_path, reliability, quick_playbooks):
    name, _, original = wedged
    result, seconds = _run(lab, tmp_path, name, "apply", playbooks=quick_playbooks)
    assert result["status"] == "changed", result
    note = next(n for n in result["notes"] if n.startswith("escalated to a restart"))
    assert "no SMTP banner after activation" in note and "killed" in note, note   # what, and why
    restarts = _escalations(tmp_path, str(result["backup_id"]))
    assert len(restarts) == 1 and float(restarts[0]["seconds"]) <= ANSWERING_WITHIN, restarts
    host = lab.host(name)
    assert _answering(lab, name) and rcpt(host.address, FOREIGN) in (454, 554)   # remediated, verified
    assert not lab.path(name, "/var/lib/remediate/lock.json").exists()
    lost = lost_bytes(original, tmp_path / "backups" / name)
    assert lost == 0
    reliability("fault", "14 MTA wedged on reload (apply path)",
                f"changed, verified; report: {note[:90]}...", "remediated, verified, SMTP answering "
                f"{float(restarts[0]['seconds']):.0f} s after the missed banner", seconds, lost)


def test_the_rollback_of_a_wedging_mta_restarts_it_and_restores_byte_identical(lab, wedged, tmp_path, reliability,
                                                                               quick_playbooks):
    name, before, original = wedged
    applied, _ = _run(lab, tmp_path, name, "apply", playbooks=quick_playbooks)
    assert applied["status"] == "changed", applied
    result, seconds = _run(lab, tmp_path, name, "rollback", playbooks=quick_playbooks)
    assert result["status"] == "restored", result
    assert any(n.startswith("escalated to a restart") for n in result["notes"]), result["notes"]
    restarts = _escalations(tmp_path, json.loads((tmp_path / "r.json").read_text())["run_id"])
    assert len(restarts) == 1 and float(restarts[0]["seconds"]) <= ANSWERING_WITHIN, restarts
    assert snapshot(lab.path(name, "/")) == before, "not byte-identical after the rollback"
    assert _answering(lab, name)
    lost = lost_bytes(original, tmp_path / "backups" / name)
    assert lost == 0
    reliability("fault", "14 MTA wedged on reload (rollback command)", "restored; report says it escalated "
                "to a restart", "byte-identical to before, SMTP answering "
                f"{float(restarts[0]['seconds']):.0f} s after the missed banner", seconds, lost)


def test_a_failed_verification_on_a_wedging_mta_rolls_back_through_a_restart_too(lab, wedged, tmp_path, reliability,
                                                                                  quick_playbooks):
    """The issue's exact case: verification fails and the rollback's own reload wedges (before: ROLLBACK
    FAILED after 3.5 minutes, no SMTP service)."""
    name, before, original = wedged
    lab.exec(name, ["touch", "/run/lab-reload-reopens-relay"], check=True)
    result, seconds = _run(lab, tmp_path, name, "apply", playbooks=quick_playbooks)
    assert result["status"] == "rolled_back", result
    assert "verification probe after reload" in str(result["error"]), result["error"]
    assert "MTA answering after restore" in result["notes"], result["notes"]
    restarts = _escalations(tmp_path, str(result["backup_id"]))
    assert len(restarts) == 2, restarts   # the apply's reload, then the rollback's
    assert all(float(r["seconds"]) <= ANSWERING_WITHIN for r in restarts), restarts
    assert snapshot(lab.path(name, "/")) == before, "not byte-identical after the rollback"
    assert _answering(lab, name)
    assert not lab.path(name, "/var/lib/remediate/lock.json").exists()
    lost = lost_bytes(original, tmp_path / "backups" / name)
    assert lost == 0
    reliability("fault", "14 MTA wedged on reload, verification fails (apply's rollback path)",
                "rolled_back; both escalations in the log and notes", "byte-identical to before, SMTP answering "
                f"{max(float(r['seconds']) for r in restarts):.0f} s after each missed banner", seconds, lost)


# --- faults 1 and 3: the host cannot be reached, or refuses the key -------------------------------------

SPARE = "mx8"   # a spare open-relay host


@pytest.fixture
def spare(lab, tmp_path):
    """SPARE fresh, its /etc/postfix, and an inventory with a 2 s connect timeout."""
    lab.reset(SPARE)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(lab.inventory_path.read_text().replace("  mta: postfix", "  mta: postfix\n"
                                                                "  connect_timeout: 2"))
    yield inventory, snapshot(lab.path(SPARE, "/"))
    lab.restore(SPARE)
    lab.reset(SPARE)


@pytest.mark.parametrize("fault", ["sshd stopped (port closed)", "link cut (host times out)"])
def test_an_unreachable_host_is_reported_after_bounded_retries_and_nothing_changes(lab, spare, tmp_path, fault,
                                                                                    reliability):
    inventory, before = spare
    if fault.startswith("sshd"):
        lab.service(SPARE, "sshd", "stop")
    else:
        lab.cut(SPARE)
    with Stopwatch() as watch:
        proc = run_cli("apply", "--yes", "-i", str(inventory), "--limit", SPARE, "--report", "r.json", cwd=tmp_path)
    lab.restore(SPARE)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())["hosts"][0]
    assert result["status"] == "unreachable" and "after 3 attempts" in result["error"], result
    assert watch.seconds < 3 * 2 + 6 + 10, watch.seconds   # 3 attempts of 2 s, backoff, start-up
    assert snapshot(lab.path(SPARE, "/")) == before
    assert not (tmp_path / "backups").exists()
    reliability("fault", f"1 SSH unreachable: {fault}", "unreachable after 3 attempts with backoff",
                "untouched (byte-identical)", watch.seconds)


def test_a_key_the_host_refuses_is_a_clear_error_not_retried(lab, spare, tmp_path, reliability):
    inventory, before = spare
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    inventory.write_text(inventory.read_text().replace(str(lab.key_file), str(other)))
    with Stopwatch() as watch:
        proc = run_cli("apply", "--yes", "-i", str(inventory), "--limit", SPARE, "--report", "r.json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())["hosts"][0]
    assert result["status"] == "unreachable" and "authentication as root failed" in result["error"], result
    assert "attempts" not in result["error"] and str(other) not in result["error"]
    assert watch.seconds < 10, watch.seconds
    assert snapshot(lab.path(SPARE, "/")) == before
    reliability("fault", "3 wrong key", "unreachable: authentication failed (not retried, key path not shown)",
                "untouched (byte-identical)", watch.seconds)


# --- fault 13: the probe port closed or filtered --------------------------------------------------------

PORT_FAULTS = {   # how port 25 is closed or filtered; iptables runs inside the host's own network namespace
    "iptables REJECT (port closed)": ["-p", "tcp", "--dport", "25", "-j", "REJECT", "--reject-with", "tcp-reset"],
    "iptables DROP (port filtered)": ["-p", "tcp", "--dport", "25", "-j", "DROP"],
    # every Postfix process stopped (SIGSTOP to the master's group): the kernel still takes connections
    # into the listen backlog, nobody greets
    "MTA frozen (connection taken, no banner)": "STOP",
    "MTA stopped (port closed)": None,   # last: the host is left stopped (reset afterwards)
}


def test_a_closed_or_filtered_probe_port_is_never_secure_and_apply_writes_nothing(lab, spare, tmp_path, reliability):
    """Each way of closing port 25 in turn, on one host (the fault undone after each)."""
    inventory, before = spare
    inventory.write_text(inventory.read_text().replace("  connect_timeout: 2", "  connect_timeout: 2\n"
                                                       "  probe_timeout: 2"))
    host = lab.host(SPARE)
    for i, (fault, rule) in enumerate(PORT_FAULTS.items()):
        pid, work = master_pid(lab.path(SPARE, "/")), tmp_path / str(i)
        work.mkdir()
        if rule is None:
            lab.service(SPARE, "mta", "stop")
        elif rule == "STOP":
            lab.exec(SPARE, ["kill", "-STOP", "--", f"-{pid}"], check=True)
        else:
            lab.exec(SPARE, ["iptables", "-I", "INPUT", *rule], check=True)
        try:
            scan = run_cli("scan", "-i", str(inventory), "--limit", SPARE, "--report", "s.json", cwd=work)
            with Stopwatch() as watch:
                proc = run_cli("apply", "--yes", "-i", str(inventory), "--limit", SPARE, "--report", "a.json",
                               cwd=work)
        finally:
            if rule == "STOP":
                lab.exec(SPARE, ["kill", "-CONT", "--", f"-{pid}"], check=True)
            elif rule is not None:
                lab.exec(SPARE, ["iptables", "-D", "INPUT", *rule], check=True)
        assert scan.returncode == 1 and proc.returncode == 1, scan.stdout + proc.stdout + proc.stderr
        scanned = json.loads((work / "s.json").read_text())["hosts"][0]
        applied = json.loads((work / "a.json").read_text())["hosts"][0]
        # no TCP connection: `unreachable`; a connection but no banner: `inconclusive`
        expected = "inconclusive" if rule == "STOP" else "unreachable"
        assert scanned["status"] == expected, (fault, scanned)
        assert applied["status"] == expected and "nothing was written" in applied["error"], (fault, applied)
        assert "port 25" in applied["error"], applied["error"]
        assert snapshot(lab.path(SPARE, "/")) == before, f"{fault}: files changed"
        assert not (work / "backups").exists() and not lab.path(SPARE, "/var/backups/remediate").exists()
        assert not lab.path(SPARE, "/var/lib/remediate/lock.json").exists()
        if rule is None:   # as it was: stopped (apply neither reloaded nor started it)
            assert lab.exec(SPARE, ["postfix", "status"]).returncode != 0
        else:   # as it was: the same master, never reloaded, answering, still an open relay
            assert master_pid(lab.path(SPARE, "/")) == pid
            assert rcpt(host.address, f"postmaster@{host.fqdn}") == 250 and rcpt(host.address, FOREIGN) == 250
        reliability("fault", f"13 probe port: {fault}",
                    f"scan and apply `{expected}`, never `secure`; apply refused before any write: "
                    f"{applied['error'][:70]}...", "untouched (byte-identical; the MTA as it was)", watch.seconds)


# --- fault 4: `become` where sudo asks for a password, or is not allowed --------------------------------

SUDOERS = {   # the sudo-user host's /etc/sudoers.d/remediate-lab for each case (the lab's own: NOPASSWD: ALL)
    "sudo asks for a password": ("ops ALL=(ALL:ALL) ALL\n", "a password is required"),
    "user not allowed to sudo (not in sudoers)": ("Defaults:ops !authenticate\n", "ops is not in the sudoers file"),
}


@pytest.mark.parametrize("fault", list(SUDOERS))
def test_become_where_sudo_asks_a_password_or_refuses_is_refused_before_any_write(lab, tmp_path, fault,
                                                                                  reliability):
    name = next(h.name for h in lab.hosts if h.scenario == "sudo-user")
    sudoers = lab.path(name, "/etc/sudoers.d/remediate-lab")
    rule, said = SUDOERS[fault]
    lab_rule, before = sudoers.read_text(), snapshot(lab.path(name, "/"))
    store = lab.path(name, "/var/backups/remediate")   # earlier tests on this host may have left runs there
    runs_before = sorted(p.name for p in store.iterdir()) if store.exists() else []
    sudoers.write_text(rule)
    try:
        with Stopwatch() as watch:
            proc = run_cli("apply", "--yes", "-i", str(lab.inventory_path), "--limit", name, "--report", "r.json",
                           cwd=tmp_path)
    finally:
        sudoers.write_text(lab_rule)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())["hosts"][0]
    error = result["error"]
    assert result["status"] == "unreachable", result
    assert error.startswith(f"{name}: become: sudo refused to run commands as root for ops") and said in error, error
    assert snapshot(lab.path(name, "/")) == before
    assert not (tmp_path / "backups").exists()
    assert (sorted(p.name for p in store.iterdir()) if store.exists() else []) == runs_before, "a backup was made"
    assert not lab.path(name, "/var/lib/remediate/lock.json").exists()
    reliability("fault", f"4 become: {fault}", f"refused before any read or write: {error[:100]}...",
                "untouched (byte-identical, no lock, no backup)", watch.seconds)


# --- fault 10: the config filesystem full or read-only; the backup directory full --------------------------

FILL = "dd if=/dev/zero of={dir}/.fill bs=4096 2>/dev/null; sync"   # exits 1 at ENOSPC, as meant
DISK_FAULTS = {   # run inside the host's own mount namespace (gone with its `lab.reset`)
    "config filesystem full (tmpfs over /etc/postfix, filled)":
        "cp -a /etc/postfix /tmp/pf && mount -t tmpfs -o size=1m,mode=0755 tmpfs /etc/postfix && "
        "cp -a /tmp/pf/. /etc/postfix/ && " + FILL.format(dir="/etc/postfix") + "; df -k /etc/postfix",
    "config filesystem read-only (bind mount, ro)":
        "mount --bind /etc/postfix /etc/postfix && mount -o remount,bind,ro /etc/postfix",
    "backup directory full (tmpfs over /var/backups/remediate, filled)":
        "mkdir -p /var/backups/remediate && mount -t tmpfs -o size=64k,mode=0700 tmpfs /var/backups/remediate && "
        + FILL.format(dir="/var/backups/remediate"),
}


def test_a_full_or_read_only_filesystem_never_leaves_a_truncated_live_file(lab, spare, tmp_path, reliability):
    """Each filesystem fault in turn, on one host (its mount undone after each)."""
    inventory, _ = spare
    host = lab.host(SPARE)
    mounts = ("/etc/postfix", "/etc/postfix", "/var/backups/remediate")
    for i, ((fault, make), mount) in enumerate(zip(DISK_FAULTS.items(), mounts, strict=True)):
        work = tmp_path / str(i)
        work.mkdir()
        lab.exec(SPARE, ["sh", "-c", make])
        before = snapshot(lab.path(SPARE, "/"))
        main_cf = lab.path(SPARE, "/etc/postfix/main.cf")
        original = {main_cf: main_cf.read_bytes()}
        try:
            with Stopwatch() as watch:
                proc = run_cli("apply", "--yes", "-i", str(inventory), "--limit", SPARE, "--report", "r.json",
                               cwd=work)
            assert proc.returncode == 1, proc.stdout + proc.stderr
            result = json.loads((work / "r.json").read_text())["hosts"][0]
            error = result["error"]
            if fault.startswith("backup"):   # refused before the first write to a live file
                assert result["status"] == "failed" and error.startswith("backup failed, nothing written"), result
                assert "No space left on device" in error, error
            else:   # the write failed on its temporary file; the live file was never opened for writing
                assert result["status"] == "rolled_back", result
                assert ("No space left on device" if "full" in fault else "Read-only file system") in error, error
                assert "/etc/postfix/main.cf" in error, error
            assert snapshot(lab.path(SPARE, "/")) == before, f"{fault}: a live file changed"
            assert not [p for p in lab.path(SPARE, "/etc/postfix").iterdir() if ".remediate." in p.name]
            assert rcpt(host.address, f"postmaster@{host.fqdn}") == 250, "Postfix not answering"
            assert not lab.path(SPARE, "/var/lib/remediate/lock.json").exists()
            lost = lost_bytes(original, work / "backups" / SPARE)
            assert lost == 0
        finally:
            lab.exec(SPARE, ["umount", mount], check=True)
        reliability("fault", f"10 {fault}", f"{result['status']}: {error[:110]}...",
                    "byte-identical (no truncated or temporary file), Postfix answering", watch.seconds, lost)


# --- faults 6 and 9: an invalid candidate, and a change that would break inbound mail ----------------------

def _playbooks_adding(directory: Path, name: str, value: str) -> Path:
    """The shipped playbooks, with the Postfix relay-auth policy also setting main.cf's `name = value` (an
    operator's edit to a copy of the playbook)."""
    directory.mkdir()
    for source in PLAYBOOK_DIR.glob("*.yaml"):
        text = source.read_text()
        if source.name == "postfix.yaml":
            step = (f"      - {{file: main_cf, transform: ensure_parameter, "
                    f"with: {{name: {name}, value: \"{value}\"}}}}\n")
            assert text.count("\n  auth-all:\n") == 1
            text = text.replace("\n  auth-all:\n", "\n" + step + "  auth-all:\n")
        (directory / source.name).write_text(text)
    return directory


def test_an_invalid_candidate_is_refused_by_validation_and_nothing_is_written(lab, spare, tmp_path, reliability):
    """`message_size_limit = 10M` (Postfix wants bytes: every Postfix program stops at "bad numerical
    configuration"), added by a playbook edit: the smtpd session on the private copy never greets, and the
    candidate is refused."""
    inventory, before = spare
    playbooks = _playbooks_adding(tmp_path / "playbooks", "message_size_limit", "10M")
    pid = master_pid(lab.path(SPARE, "/"))
    with Stopwatch() as watch:
        proc = run_cli("apply", "--yes", "-i", str(inventory), "--limit", SPARE, "--report", "r.json",
                       "--playbooks", str(playbooks), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())["hosts"][0]
    # smtpd, started on the private copy for the simulated session, stops at the bad number
    assert result["status"] == "failed", result
    assert "the simulated session against the candidate is not secure" in result["error"], result["error"]
    assert "host's mail log" in result["error"], result["error"]    # where Postfix said why (no terminal)
    assert "+message_size_limit = 10M" in result["diff"], result["diff"]   # what was refused, in the report
    assert snapshot(lab.path(SPARE, "/")) == before and master_pid(lab.path(SPARE, "/")) == pid
    assert not (tmp_path / "backups").exists(), "nothing is backed up (or written) before validation passes"
    assert not list(lab.path(SPARE, "/tmp").glob("remediate-*")), "the private copy was left behind"
    assert not lab.path(SPARE, "/var/lib/remediate/lock.json").exists()
    host = lab.host(SPARE)
    assert rcpt(host.address, f"postmaster@{host.fqdn}") == 250
    reliability("fault", "6 candidate configuration invalid (`message_size_limit = 10M` from a playbook edit)",
                f"failed before the backup: {result['error'][:100]}...",
                "untouched (byte-identical, not reloaded), Postfix answering", watch.seconds)


INBOUND_BREAKS = {
    "the candidate refuses it (a playbook edit: smtpd_recipient_restrictions = reject)": "refused before writing",
    "the MTA refuses it after the reload (injected)": "rolled back",
}


def test_a_change_that_would_break_inbound_mail_is_refused_or_rolled_back(lab, spare, tmp_path, reliability):
    """Both cases in turn, on one host: the playbook edit first, then the reload that breaks it."""
    inventory, before = spare
    host = lab.host(SPARE)
    for i, (fault, outcome) in enumerate(INBOUND_BREAKS.items()):
        work = tmp_path / str(i)
        work.mkdir()
        extra: tuple[str, ...] = ()
        if fault.startswith("the candidate"):
            extra = ("--playbooks", str(_playbooks_adding(work / "playbooks", "smtpd_recipient_restrictions",
                                                          "reject")))
        else:
            wrap_postfix(lab, SPARE, "/usr/sbin/postconf -e 'smtpd_recipient_restrictions = reject'")
        main_cf = lab.path(SPARE, "/etc/postfix/main.cf")
        original = {main_cf: main_cf.read_bytes()}
        with Stopwatch() as watch:
            proc = run_cli("apply", "--yes", "-i", str(inventory), "--limit", SPARE, "--report", "r.json", *extra,
                           cwd=work)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        result = json.loads((work / "r.json").read_text())["hosts"][0]
        if fault.startswith("the candidate"):
            assert result["status"] == "failed", result
            assert "would break inbound mail that the live configuration accepts" in result["error"], result
            assert not (work / "backups").exists(), "nothing is backed up (or written) before validation passes"
        else:
            assert result["status"] == "rolled_back", result
            assert "inbound mail accepted before the change is refused now" in result["error"], result
        assert snapshot(lab.path(SPARE, "/")) == before, f"{fault}: not byte-identical"
        assert rcpt(host.address, f"postmaster@{host.fqdn}") == 250, "inbound mail not accepted as before"
        assert not lab.path(SPARE, "/var/lib/remediate/lock.json").exists()
        lost = lost_bytes(original, work / "backups" / SPARE)
        assert lost == 0
        reliability("fault", f"9 change would break inbound mail: {fault}",
                    f"{result['status']} ({outcome}): {result['error'][:90]}...",
                    "byte-identical, inbound mail for the host's domain accepted as before", watch.seconds, lost)


# --- fault 12: a slow, lossy link ---------------------------------------------------------------------------

DELAY_MS, LOSS = 200, 0.05
DELAY_LINE = Path(__file__).resolve().parents[2] / "bench" / "delayline.py"   # NFQUEUE: this kernel has no netem


@pytest.fixture
def slow_lossy_link(lab, spare, tmp_path):
    """SPARE behind a link that delays what it sends by DELAY_MS (as `tc netem delay` on its eth0 would) and
    drops LOSS of the packets each way at random, inside the host's own network namespace."""
    netns, ready = lab.host(SPARE).netns, tmp_path / "delayline.ready"
    line = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, str(DELAY_LINE), "--queue", "94",
                             "--delay-ms", str(DELAY_MS), "--ready", str(ready)], stdin=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    lossy = ["-m", "statistic", "--mode", "random", "--probability", str(LOSS), "-j", "DROP"]
    rules = [["INPUT", "-i", "eth0", *lossy], ["OUTPUT", "-o", "eth0", *lossy],
             ["OUTPUT", "-o", "eth0", "-j", "NFQUEUE", "--queue-num", "94", "--queue-bypass"]]
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert line.poll() is None and time.monotonic() < deadline, "the delay line did not start"
            time.sleep(0.05)
        for rule in rules:
            subprocess.run(["ip", "netns", "exec", netns, "iptables", "-A", *rule], check=True)
        yield line
    finally:
        for rule in rules:
            subprocess.run(["ip", "netns", "exec", netns, "iptables", "-D", *rule], capture_output=True)
        line.terminate()
        line.wait(timeout=10)


def _connect_seconds(address: str, port: int = 22) -> float:
    started = time.monotonic()
    with socket.create_connection((address, port), timeout=10):
        return time.monotonic() - started


def test_a_slow_lossy_link_still_gives_a_correct_verified_run(lab, spare, slow_lossy_link, tmp_path, reliability):
    """The lab inventory's default timeouts (connect 10 s, command 120 s, probe reads 10 s; each configurable:
    `connect_timeout`, `command_timeout`, `probe_timeout`)."""
    host = lab.host(SPARE)
    assert min(_connect_seconds(host.address) for _ in range(3)) >= DELAY_MS / 1000, "the link is not slow"
    with Stopwatch() as watch:
        proc = run_cli("apply", "--yes", "-i", str(lab.inventory_path), "--limit", SPARE, "--report", "r.json",
                       cwd=tmp_path)
    assert slow_lossy_link.poll() is None, "the delay line died: the run was not delayed throughout"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())["hosts"][0]
    assert result["status"] == "changed", result
    assert rcpt(host.address, FOREIGN) in (454, 554) and rcpt(host.address, f"postmaster@{host.fqdn}") == 250
    main_cf = lab.path(SPARE, "/etc/postfix/main.cf").read_bytes()
    backup = tmp_path / "backups" / SPARE / result["backup_id"] / "files/etc/postfix/main.cf"
    assert backup.read_bytes() != main_cf and b"mynetworks = 127.0.0.0/8" in main_cf
    reliability("fault", f"12 slow, lossy link ({DELAY_MS} ms delay from the host, {LOSS:.0%} loss each way; "
                "NFQUEUE delay line, this kernel has no netem)", "changed, verified from outside",
                "remediated (relay refused, postmaster@ accepted), backup intact", watch.seconds)
