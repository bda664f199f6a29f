"""The approval workflow on the lab: a plan made, rendered for a ticket, signed, approved and applied changes
exactly the planned hosts; a host that drifted or whose key changed since is skipped, untouched; an edited,
truncated or expired plan is refused before anything is contacted; waves stop within the failure budget.

Real `remediate` command line, real sshd and Postfix hosts; files compared byte for byte through each host's
own root; the HTML rendering loaded in headless Chromium.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.checks import FOREIGN, rcpt, snapshot, wrap_postfix

POSTFIX = ["mx1", "mx2", "mx3", "mx4", "mx5", "mx6", "mx7", "mx8", "mx9"]


@pytest.fixture(scope="module")
def work(lab, tmp_path_factory):
    for name in POSTFIX:
        lab.reset(name)
    return tmp_path_factory.mktemp("approval")


def cli(lab, cwd, *args, inventory=None):
    return run_cli(*args, "-i", str(inventory or lab.inventory_path), cwd=cwd)


def hosts_of(path: Path) -> dict[str, dict]:
    return {h["name"]: h for h in json.loads(path.read_text())["hosts"]}


def nothing_ran(cwd: Path) -> bool:
    """No run journal, log or backup was written: the refused command contacted no host."""
    return not (cwd / "runs").exists() and not (cwd / "backups").exists()


def test_a_plan_made_rendered_signed_and_applied_changes_exactly_the_planned_hosts(lab, work, tmp_path):
    key = tmp_path / "approver"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    before = {n: snapshot(lab.path(n, "/")) for n in POSTFIX}
    proc = cli(lab, work, "plan", "--limit", "mx1,mx2,mx5", "-o", "plan.json", "--sign", str(key))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads((work / "plan.json").read_text())
    assert {h["name"]: h["status"] for h in plan["hosts"]} == {"mx1": "would_change", "mx2": "would_change",
                                                              "mx5": "compliant"}
    mx1 = plan["hosts"][0]
    assert mx1["host_key"].startswith("SHA256:") and mx1["driver"]["name"] == "postfix"
    assert mx1["resources"]["/etc/postfix/main.cf"] == before["mx1"]["etc/postfix/main.cf"][0]
    assert any("reload" in c for c in mx1["commands"]["activate"])

    md = cli(lab, work, "plan", "--from", "plan.json", "--format", "md")
    assert md.returncode == 0 and "## mx1 (" in md.stdout and "```diff" in md.stdout, md.stderr

    proc = cli(lab, work, "apply", "--yes", "--plan", "plan.json", "--verify-with", f"{key}.pub", "--report", "a.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    applied = hosts_of(work / "a.json")
    assert {n: h["status"] for n, h in applied.items()} == {"mx1": "changed", "mx2": "changed", "mx5": "unchanged"}
    for name in ("mx1", "mx2"):   # each file is now exactly the approved candidate
        approved = next(h for h in plan["hosts"] if h["name"] == name)["candidate"]
        for path, digest in approved.items():
            assert hashlib.sha256(lab.path(name, path).read_bytes()).hexdigest() == digest, (name, path)
        assert rcpt(lab.host(name).address, FOREIGN) in (454, 554)
    for name in set(POSTFIX) - {"mx1", "mx2"}:
        assert snapshot(lab.path(name, "/")) == before[name], f"{name} was not approved, yet touched"
    # the details say what was fixed and how it was verified, not the finding from before
    assert applied["mx1"]["notes"][0].startswith("fixed open_relay; verified: 19/19 relay tests refused, "
                                                  "postmaster@ accepted"), applied["mx1"]["notes"]
    assert "fixed open_relay; verified:" in proc.stdout and "relay accepted for" not in proc.stdout


def test_the_html_rendering_loads_offline_in_headless_chromium_with_every_host_and_diff(lab, work, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by scripts/setup-system.sh"
    if not (work / "plan.json").exists():
        assert cli(lab, work, "plan", "--limit", "mx1,mx2,mx5", "-o", "plan.json").returncode in (0, 1)
    page = tmp_path / "plan.html"
    proc = run_cli("plan", "--from", str(work / "plan.json"), "--format", "html", "-o", str(page), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads((work / "plan.json").read_text())
    argv = [chromium, "--headless=new", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom", page.as_uri()]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")
    dom = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    for host in plan["hosts"]:
        assert f'id="host-{host["name"]}"' in dom, host["name"]
        if host["diff"]:
            assert f'<pre class="diff" data-host="{host["name"]}">' in dom, host["name"]
            first_added = next(ln for ln in host["diff"].splitlines() if ln.startswith("+") and not ln.startswith("++"))
            assert first_added.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in dom
    assert plan["digest"]["value"] in dom and plan["expires"] in dom


def test_a_host_edited_after_approval_is_skipped_for_drift_and_left_byte_identical(lab, work, tmp_path):
    for name in ("mx8", "mx9"):
        lab.reset(name)
    try:
        assert cli(lab, tmp_path, "plan", "--limit", "mx8,mx9", "-o", "plan.json").returncode == 0
        lab.exec("mx9", ["sh", "-c", "echo '# edited after approval' >> /etc/postfix/main.cf"], check=True)
        edited = snapshot(lab.path("mx9", "/"))
        proc = cli(lab, tmp_path, "apply", "--yes", "--plan", "plan.json", "--report", "a.json")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        results = hosts_of(tmp_path / "a.json")
        assert results["mx8"]["status"] == "changed"
        assert results["mx9"]["status"] == "skipped" and results["mx9"]["reason"] == "drift", results["mx9"]
        assert "/etc/postfix/main.cf changed on the host since the plan was approved" in results["mx9"]["error"]
        assert snapshot(lab.path("mx9", "/")) == edited
    finally:
        for name in ("mx8", "mx9"):
            lab.reset(name)


def test_a_host_whose_key_changed_since_approval_is_skipped_untouched(lab, work, tmp_path):
    lab.reset("mx9")
    try:
        assert cli(lab, tmp_path, "plan", "--limit", "mx9", "-o", "plan.json").returncode == 0
        lab.exec("mx9", ["sh", "-c", "rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' "
                                     "-f /etc/ssh/ssh_host_ed25519_key"], check=True)
        lab.service("mx9", "sshd", "stop")
        time.sleep(0.3)
        lab.service("mx9", "sshd", "start")
        new_key = lab.path("mx9", "/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
        address = lab.host("mx9").address
        known = tmp_path / "known_hosts"   # someone trusted the new key since the approval
        known.write_text("".join(ln if not ln.startswith(address + " ") else f"{address} {' '.join(new_key)}\n"
                                 for ln in lab.known_hosts.read_text().splitlines(keepends=True)))
        inventory = tmp_path / "inventory.yaml"
        inventory.write_text(lab.inventory_path.read_text().replace(str(lab.known_hosts), str(known)))
        before = snapshot(lab.path("mx9", "/"))
        proc = cli(lab, tmp_path, "apply", "--yes", "--plan", "plan.json", "--report", "a.json", inventory=inventory)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        result = hosts_of(tmp_path / "a.json")["mx9"]
        assert result["status"] == "skipped" and result["reason"] == "host key changed", result
        assert snapshot(lab.path("mx9", "/")) == before
    finally:
        lab.reset("mx9")


@pytest.mark.parametrize("damage", ["one byte", "truncated", "expired", "whitespace"])
def test_an_edited_truncated_or_expired_plan_is_refused_with_exit_2_and_nothing_contacted(lab, work, tmp_path,
                                                                                          damage):
    lab.reset("mx8")
    made = tmp_path / "made"
    made.mkdir()
    expiry = "2s" if damage == "expired" else "24h"
    assert cli(lab, made, "plan", "--limit", "mx8", "-o", "plan.json", "--expires", expiry).returncode == 0
    plan = made / "plan.json"
    raw = plan.read_bytes()
    middle = len(raw) // 2
    if damage == "one byte":
        plan.write_bytes(raw[:middle] + bytes([raw[middle] ^ 0x01]) + raw[middle + 1:])
    elif damage == "truncated":
        plan.write_bytes(raw[:middle])
    elif damage == "whitespace":   # same JSON content, one byte of indentation changed
        at = raw.index(b"\n  ", middle) + 1
        plan.write_bytes(raw[:at] + b"\t" + raw[at + 1:])
    else:
        time.sleep(2.5)
    before = snapshot(lab.path("mx8", "/"))
    applying = tmp_path / "apply"
    applying.mkdir()
    proc = cli(lab, applying, "apply", "--yes", "--plan", str(plan))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(plan) in proc.stderr
    expected = {"one byte": "edited", "truncated": "truncated", "expired": "expired at", "whitespace": "edited"}
    assert expected[damage] in proc.stderr, proc.stderr
    assert snapshot(lab.path("mx8", "/")) == before
    assert nothing_ran(applying)
    assert not lab.path("mx8", "/var/lib/remediate/lock.json").exists()
    assert not lab.path("mx8", "/var/backups/remediate").exists()


def test_waves_stop_before_the_second_wave_when_the_first_host_fails_with_no_failure_tolerated(lab, work, tmp_path):
    hosts = ["mx6", "mx7", "mx8", "mx9"]   # inventory order; waves of 1, 2 (50%), 1
    for name in hosts:
        lab.reset(name)
    try:
        wrap_postfix(lab, "mx6", "echo 'postfix: fatal: reload refused (injected)' >&2; exit 1")
        before = {n: snapshot(lab.path(n, "/")) for n in hosts}
        proc = cli(lab, tmp_path, "apply", "--yes", "--limit", ",".join(reversed(hosts)), "--serial", "1,50%,100%",
                   "--max-fail-percent", "0", "--report", "w.json")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        results = hosts_of(tmp_path / "w.json")
        assert results["mx6"]["status"] == "rolled_back", results["mx6"]
        for name in ("mx7", "mx8", "mx9"):
            assert results[name]["status"] == "skipped" and results[name]["reason"] == "not started", results[name]
            assert "failure budget spent (1 host(s) failed: mx6)" in results[name]["error"]
            assert snapshot(lab.path(name, "/")) == before[name]
        assert snapshot(lab.path("mx6", "/")) == before["mx6"], "the failed host is rolled back byte-identical"
        journal = (tmp_path / "runs" / json.loads((tmp_path / "w.json").read_text())["run_id"] / "journal.jsonl")
        touched = {json.loads(line).get("host") for line in journal.read_text().splitlines()} - {None}
        assert touched == {"mx6"}, "only the first wave started"
        # progress without a terminal: plain lines naming the wave and the budget
        assert "apply: wave 1/3 started: mx6" in proc.stderr
        assert "apply: mx6: rolled_back (counts against the budget); 1/4 done, failures 1/0 tolerated" in proc.stderr
        assert "wave 2/3" not in proc.stderr
        assert "NOT STARTED: mx7, mx8, mx9 (failure budget spent (1 host(s) failed: mx6)" in proc.stdout
    finally:
        for name in hosts:
            lab.reset(name)


def test_status_takes_the_inventory_and_limit_like_every_other_command(lab, work, tmp_path):
    proc = run_cli("status", "-i", str(lab.inventory_path), "--limit", "mx1", "--runs", str(work / "runs"), cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "  mx1: done" in proc.stdout and "  mx2:" not in proc.stdout
    proc = run_cli("status", "-i", str(lab.inventory_path), "--limit", "nosuchhost", cwd=work)
    assert proc.returncode == 2 and "nosuchhost" in proc.stderr
