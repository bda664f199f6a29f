"""The product on the lab, checked from outside: scan → plan → apply → apply again → rollback, and faults.

Runs the real `remediate` command line against real sshd and Postfix hosts; verdicts are cross-checked
with nmap's smtp-open-relay and a hand-made AUTH ANONYMOUS attempt, and files are compared byte for byte
through each host's own root (not over the tool's SSH).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from remediate.lab import SCENARIOS
from tests.conftest import run_cli
from tests.integration.checks import (
    FOREIGN,
    anonymous_advertised,
    auth_anonymous_accepted,
    master_pid,
    nmap_open_relay,
    rcpt,
    snapshot,
    wrap_postfix,
)

MAIN = ["mx1", "mx2", "mx3", "mx4", "mx5", "mx6", "mx7"]   # one host per scenario
LIMIT = ",".join(MAIN)


@pytest.fixture(scope="module")
def work(lab, tmp_path_factory):
    """Every host fresh in its scenario; a working folder for the tool's backups/, runs/ and reports."""
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lab.reset, [h.name for h in lab.hosts]))
    return tmp_path_factory.mktemp("core")


@pytest.fixture(scope="module")
def original(lab, work):
    """The hosts' /etc/postfix before anything ran, by host name."""
    return {h.name: snapshot(lab.path(h.name, "/")) for h in lab.hosts}


def cli(lab, work, *args):
    return run_cli(*args, "-i", str(lab.inventory_path), cwd=work)


def report(work, name):
    return {h["name"]: h for h in json.loads((work / name).read_text())["hosts"]}


def test_scan_flags_exactly_the_vulnerable_hosts_and_agrees_with_nmap(lab, work, original):
    proc = cli(lab, work, "scan", "--limit", LIMIT, "--report", "scan.json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    hosts = report(work, "scan.json")
    nmap = nmap_open_relay(*(h.address for h in lab.hosts[:7]))
    for h in lab.hosts[:7]:
        expected = set(SCENARIOS[h.scenario].findings)
        got = hosts[h.name]
        assert got["status"] == ("vulnerable" if expected else "secure"), (h.scenario, got)
        probe_codes = {f["code"] for f in got["findings_before"] if f["source"] == "probe"}
        assert probe_codes == expected, (h.scenario, got["findings_before"])
        assert nmap[h.address] == ("open_relay" in probe_codes), h.scenario
        assert auth_anonymous_accepted(h.address) == ("anonymous_auth" in probe_codes), h.scenario
        if expected:  # each finding is explained by the parameter that causes it
            assert any(f["source"] == "config" for f in got["findings_before"]), got


def test_plan_changes_nothing_and_shows_diffs_and_simulated_verdicts(lab, work, original):
    pids = {n: master_pid(lab.path(n, "/")) for n in MAIN}
    proc = cli(lab, work, "plan", "--limit", LIMIT, "-o", "plan.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for n in MAIN:
        assert snapshot(lab.path(n, "/")) == original[n], f"plan touched {n}"
        assert master_pid(lab.path(n, "/")) == pids[n]
        assert not list(lab.path(n, "/tmp").glob("remediate-*")), "plan left temporary files"
    plan = report(work, "plan.json")
    for h in lab.hosts[:7]:
        vulnerable = bool(SCENARIOS[h.scenario].findings)
        assert plan[h.name]["status"] == ("would_change" if vulnerable else "compliant"), plan[h.name]
        assert bool(plan[h.name]["diff"]) == vulnerable
        assert plan[h.name]["simulation"].startswith("verdict secure")
    diff = plan["mx1"]["diff"]
    assert "-mynetworks = 0.0.0.0/0" in diff and "+mynetworks = 127.0.0.0/8 [::1]/128" in diff
    assert "smtpd_authentication_required" not in proc.stdout and "my_network " not in proc.stdout


def test_apply_secures_every_vulnerable_host_and_keeps_inbound_mail(lab, work, original):
    proc = cli(lab, work, "apply", "--yes", "--limit", LIMIT, "--report", "apply.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    applied = report(work, "apply.json")
    nmap = nmap_open_relay(*(h.address for h in lab.hosts[:7]))
    for h in lab.hosts[:7]:
        vulnerable = bool(SCENARIOS[h.scenario].findings)
        assert applied[h.name]["status"] == ("changed" if vulnerable else "unchanged"), applied[h.name]
        assert not nmap[h.address], h.scenario
        assert not anonymous_advertised(h.address), h.scenario
        assert rcpt(h.address, FOREIGN) in (454, 554)
        assert rcpt(h.address, f"postmaster@{h.fqdn}") == 250, f"{h.scenario}: inbound mail broken"
    secure = next(h for h in lab.hosts if h.scenario == "secure")
    assert snapshot(lab.path(secure.name, "/")) == original[secure.name], "the secure host was touched"
    run_id = applied["mx1"]["backup_id"]
    local = work / "backups" / "mx1" / run_id
    manifest = json.loads((local / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == ["/etc/postfix/main.cf"]
    on_host = lab.path("mx1", f"/var/backups/remediate/{run_id}")
    assert (on_host / "files/etc/postfix/main.cf").stat().st_mode & 0o777 == 0o600
    assert on_host.stat().st_mode & 0o777 == 0o700
    assert not lab.path("mx1", "/var/lib/remediate/lock.json").exists(), "lock not released"
    assert (work / "backups").stat().st_mode & 0o777 == 0o700 and local.stat().st_mode & 0o777 == 0o700
    # the probes (scan's, apply's before and after) never sent DATA: no message was ever queued
    for h in lab.hosts[:7]:
        queued = [f for q in ("incoming", "active", "deferred", "hold", "maildrop")
                  for f in lab.path(h.name, f"/var/spool/postfix/{q}").rglob("*") if f.is_file()]
        assert not queued, (h.name, queued)
        log = lab.path(h.name, "/var/log/syslog").read_text(errors="replace")
        # a message that entered the queue: cleanup logs its message-id, qmgr its sender and size
        assert not re.search(r"postfix/(cleanup|qmgr)\[\d+\]: [0-9A-F]+: (message-id|from)=", log), h.name


def test_second_apply_reports_every_host_unchanged_and_touches_nothing(lab, work, original):
    before = {n: snapshot(lab.path(n, "/")) for n in MAIN}
    proc = cli(lab, work, "apply", "--yes", "--limit", LIMIT, "--report", "apply2.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {h["status"] for h in report(work, "apply2.json").values()} == {"unchanged"}
    assert {n: snapshot(lab.path(n, "/")) for n in MAIN} == before


def test_rollback_restores_every_changed_host_byte_identical(lab, work, original):
    proc = cli(lab, work, "rollback", "--yes", "--limit", LIMIT, "--report", "rollback.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rolled = report(work, "rollback.json")
    for h in lab.hosts[:7]:
        vulnerable = bool(SCENARIOS[h.scenario].findings)
        assert rolled[h.name]["status"] == ("restored" if vulnerable else "skipped"), rolled[h.name]
        assert snapshot(lab.path(h.name, "/")) == original[h.name], f"{h.name} not byte-identical"
    address = lab.host("mx1").address
    assert nmap_open_relay(address)[address], "rollback returns to the old (open) state"


@pytest.mark.parametrize(("host", "sabotage"), [
    ("mx8", "echo 'postfix: fatal: reload refused (injected)' >&2; exit 1"),
    # reload "works" but something else re-opens the relay: verification from outside must catch it
    ("mx9", "/usr/sbin/postconf -e 'mynetworks = 0.0.0.0/0'"),
])
def test_a_failed_reload_or_verification_rolls_back_byte_identical(lab, work, original, host, sabotage, reliability):
    wrap_postfix(lab, host, sabotage)
    try:
        before = snapshot(lab.path(host, "/"))
        proc = cli(lab, work, "apply", "--yes", "--limit", host, "--report", f"fault-{host}.json")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        result = report(work, f"fault-{host}.json")[host]
        assert result["status"] == "rolled_back", result
        assert result["error"]
        assert snapshot(lab.path(host, "/")) == before, "files not restored byte-identical"
        assert rcpt(lab.host(host).address, f"postmaster@{lab.host(host).fqdn}") == 250, "Postfix not answering"
        journal = (work / "runs" / result["backup_id"] / "journal.jsonl").read_text()
        assert '"phase": "rolled_back"' in journal
    finally:
        lab.reset(host)
    fault = "7 MTA fails to reload the new config" if host == "mx8" else "8 relay reopened after reload"
    reliability("fault",
                fault,
                "rolled_back",
                "byte-identical, Postfix answering")


def test_bad_inventory_exits_2_naming_file_line_and_key_and_contacts_nobody(lab, tmp_path, reliability):
    bad = tmp_path / "inventory.yaml"
    bad.write_text(lab.inventory_path.read_text().replace("  mta: postfix", "  mta: postfix\n  becom: true"))
    line = bad.read_text().splitlines().index("  becom: true") + 1
    proc = run_cli("apply", "--yes", "-i", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{bad}:{line}" in proc.stderr and "becom" in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "backups").exists()
    proc = run_cli("scan", "-i", str(lab.inventory_path), "--limit", "mx1,nosuchhost", cwd=tmp_path)
    assert proc.returncode == 2 and "nosuchhost" in proc.stderr
    reliability("hostile input",
                "inventory: unknown key; --limit naming a missing host",
                "exit 2 naming file, line and key",
                "nothing contacted; no runs/ or backups/")


def test_apply_without_a_terminal_needs_yes(lab, work):
    before = snapshot(lab.path("mx1", "/"))
    proc = cli(lab, work, "apply", "--limit", "mx1")
    assert proc.returncode == 2 and "--yes" in proc.stderr
    assert snapshot(lab.path("mx1", "/")) == before


def test_unknown_host_key_is_refused_and_nothing_changes(lab, work, tmp_path, reliability):
    inv = tmp_path / "inventory.yaml"
    (tmp_path / "empty_known_hosts").write_text("")
    inv.write_text(lab.inventory_path.read_text().replace(str(lab.known_hosts),
                                                          str(tmp_path / "empty_known_hosts")))
    before = snapshot(lab.path("mx1", "/"))
    proc = run_cli("apply", "--yes", "-i", str(inv), "--limit", "mx1", "--report", "r.json", cwd=tmp_path)
    assert proc.returncode == 1
    result = json.loads((tmp_path / "r.json").read_text())["hosts"][0]
    assert result["status"] == "unreachable" and "host key" in result["error"]
    assert snapshot(lab.path("mx1", "/")) == before
    reliability("security", "unknown host key (apply)", "unreachable: host key unknown, never accepted", "untouched")


def test_an_approved_plan_is_applied_as_planned_and_refused_where_the_host_changed_since(lab, work, reliability):
    for name in ("mx8", "mx9"):
        lab.reset(name)
    try:
        proc = cli(lab, work, "plan", "--limit", "mx8,mx9", "-o", "approved.json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lab.exec("mx9", ["sh", "-c", "echo '# hand edit after the plan' >> /etc/postfix/main.cf"], check=True)
        tampered = snapshot(lab.path("mx9", "/"))
        proc = cli(lab, work, "apply", "--yes", "--plan", "approved.json", "--report", "planned.json")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        results = report(work, "planned.json")
        assert set(results) == {"mx8", "mx9"}   # only the plan's hosts, though the inventory has more
        assert results["mx8"]["status"] == "changed"
        # drift is not a failure of the run's work: skipped, naming the file whose checksum changed
        assert results["mx9"]["status"] == "skipped" and results["mx9"]["reason"] == "drift"
        assert "/etc/postfix/main.cf changed on the host since the plan was approved" in results["mx9"]["error"]
        assert snapshot(lab.path("mx9", "/")) == tampered, "a stale host must not be written"
        bad = work / "not-a-plan.json"
        bad.write_text('{"command": "scan", "hosts": []}')
        assert cli(lab, work, "apply", "--yes", "--plan", str(bad)).returncode == 2
    finally:
        for name in ("mx8", "mx9"):
            lab.reset(name)
    reliability("fault",
                "host changed since the approved plan",
                "stale plan refused for that host, the other applied",
                "the stale host untouched")


def test_a_failed_canary_keeps_the_rest_of_the_fleet_untouched(lab, work, tmp_path):
    import ipaddress

    ghost = str(ipaddress.ip_network(lab.subnet).network_address + 250)   # nobody lives there
    inv = tmp_path / "inventory.yaml"
    inv.write_text(lab.inventory_path.read_text()
                   .replace("  mta: postfix", "  mta: postfix\n  connect_timeout: 2")
                   .replace("hosts:\n", f"hosts:\n  ghost: {{address: {ghost}}}\n", 1))
    lab.reset("mx8")
    before = snapshot(lab.path("mx8", "/"))
    proc = run_cli("apply", "--yes", "-i", str(inv), "--limit", "ghost,mx8", "--canary", "1", "--report", "c.json",
                   cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = {h["name"]: h for h in json.loads((tmp_path / "c.json").read_text())["hosts"]}
    assert results["ghost"]["status"] == "unreachable"
    assert results["mx8"]["status"] == "skipped" and "canary wave failed" in results["mx8"]["error"]
    assert snapshot(lab.path("mx8", "/")) == before


def test_a_probe_domain_the_host_serves_makes_the_scan_inconclusive_never_secure(lab, work, tmp_path):
    secure = next(h for h in lab.hosts if h.scenario == "secure")
    inv = tmp_path / "inventory.yaml"
    inv.write_text(lab.inventory_path.read_text().replace(
        f"    mail_domain: {secure.fqdn}\n", f"    mail_domain: {secure.fqdn}\n    probe_domain: {secure.fqdn}\n"))
    proc = run_cli("scan", "-i", str(inv), "--limit", secure.name, "--report", "s.json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "s.json").read_text())["hosts"][0]
    assert result["status"] == "inconclusive"
    assert any(f"probe domain {secure.fqdn} is in the host's mydestination" in n for n in result["notes"])


def test_a_held_lock_keeps_a_second_run_off_the_host_until_broken(lab, work, tmp_path, reliability):
    import time as _time

    lab.reset("mx9")
    lock = lab.path("mx9", "/var/lib/remediate/lock.json")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"run_id": "20200101T000000Z-dead", "orchestrator": "elsewhere", "pid": 1,
                                "time": _time.time() - 7200}))
    before = snapshot(lab.path("mx9", "/"))
    proc = run_cli("apply", "--yes", "-i", str(lab.inventory_path), "--limit", "mx9", "--report", "l.json",
                   cwd=tmp_path)
    assert proc.returncode == 1
    result = json.loads((tmp_path / "l.json").read_text())["hosts"][0]
    assert result["status"] == "failed" and "locked by run 20200101T000000Z-dead" in result["error"]
    assert snapshot(lab.path("mx9", "/")) == before
    proc = run_cli("apply", "--yes", "--break-lock", "-i", str(lab.inventory_path), "--limit", "mx9",
                   "--report", "l2.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = json.loads((tmp_path / "l2.json").read_text())["run_id"]
    assert '"lock_broken"' in (tmp_path / "runs" / run_id / "log.jsonl").read_text()
    assert not lock.exists()
    lab.reset("mx9")
    reliability("fault",
                "11 two runs at once (host lock held)",
                "second run refused: locked by run ...",
                "untouched until --break-lock")


def test_policy_auth_all_refuses_every_unauthenticated_recipient(lab, work, tmp_path):
    lab.reset("mx8")
    inv = tmp_path / "inventory.yaml"
    inv.write_text(lab.inventory_path.read_text().replace("  policy: relay-auth", "  policy: auth-all"))
    try:
        proc = run_cli("apply", "--yes", "-i", str(inv), "--limit", "mx8", "--report", "a.json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads((tmp_path / "a.json").read_text())["hosts"][0]["status"] == "changed"
        host = lab.host("mx8")
        assert rcpt(host.address, FOREIGN) // 100 == 5
        assert rcpt(host.address, f"postmaster@{host.fqdn}") // 100 == 5   # submission-only: nothing unauthenticated
        main_cf = lab.path("mx8", "/etc/postfix/main.cf").read_text()
        assert "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject" in main_cf
        proc = run_cli("scan", "-i", str(inv), "--limit", "mx8", cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        lab.reset("mx8")
