"""The lab is what it claims: checked from outside with real SMTP and SSH clients, and it cleans up."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remediate.lab import Lab
from tests.conftest import LAB_SUBNET
from tests.integration.checks import FOREIGN, auth_anonymous_accepted, nmap_open_relay, rcpt


def host_named(lab: Lab, scenario: str):
    return next(h for h in lab.hosts if h.scenario == scenario)


def rcpt_foreign(address: str) -> int:
    return rcpt(address, FOREIGN)


@pytest.mark.parametrize("scenario", ["open-relay", "master-override", "access-map", "messy", "sudo-user"])
def test_open_relay_scenarios_accept_foreign_rcpt_from_the_orchestrator(lab, scenario):
    assert rcpt_foreign(host_named(lab, scenario).address) == 250


def test_secure_host_refuses_relay_and_accepts_its_own_postmaster(lab):
    host = host_named(lab, "secure")
    assert rcpt_foreign(host.address) in (454, 554)
    assert rcpt(host.address, f"postmaster@{host.fqdn}") == 250


def test_anonymous_auth_host_answers_235_to_two_step_auth_anonymous(lab):
    assert auth_anonymous_accepted(host_named(lab, "anonymous-auth").address)
    assert not auth_anonymous_accepted(host_named(lab, "secure").address)


def test_nmap_agrees_on_open_relay_and_secure(lab):
    relay, secure = host_named(lab, "open-relay").address, host_named(lab, "secure").address
    assert nmap_open_relay(relay, secure) == {relay: True, secure: False}


def test_ssh_with_the_lab_key_and_known_hosts_and_sudo_for_the_ops_user(lab):
    host = host_named(lab, "sudo-user")
    base = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={lab.known_hosts}", "-i", str(lab.key_file)]
    proc = subprocess.run([*base, f"ops@{host.address}", "sudo -n id -u && id -un"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "ops"]


def test_hosts_have_private_filesystems_and_hostnames(lab):
    a, b = lab.hosts[0], lab.hosts[1]
    lab.exec(a.name, ["sh", "-c", "mkdir -p /var/backups/x && echo mine > /var/backups/x/f"], check=True)
    assert lab.exec(b.name, ["test", "-e", "/var/backups/x/f"]).returncode != 0
    assert not Path("/var/backups/x/f").exists()
    assert lab.exec(a.name, ["hostname"], check=True).stdout.strip() == a.fqdn
    assert lab.exec(a.name, ["cat", "/etc/postfix/main.cf"], check=True).stdout != \
        lab.exec(b.name, ["cat", "/etc/postfix/main.cf"], check=True).stdout
    lab.exec(a.name, ["rm", "-rf", "/var/backups/x"], check=True)


def test_hosts_have_no_route_off_the_lab(lab):
    routes = lab.exec(lab.hosts[0].name, ["ip", "-4", "route"], check=True).stdout
    assert "default" not in routes
    assert routes.strip().splitlines() == [line for line in routes.strip().splitlines() if LAB_SUBNET in line]


def test_cut_and_restore_link(lab):
    host = host_named(lab, "secure")
    lab.cut(host.name)
    try:
        with pytest.raises(OSError):
            smtplib.SMTP(host.address, 25, timeout=2)
    finally:
        lab.restore(host.name)
    assert rcpt_foreign(host.address) in (454, 554)


def _leftovers(prefix: str, pids: list[int]) -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [line for line in netns.splitlines() if line.startswith(prefix)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [line.split(":")[1].strip() for line in links.splitlines() if f" {prefix}" in line]
    found += [f"pid {p}" for p in pids if Path(f"/proc/{p}").exists()
              and Path(f"/proc/{p}/stat").read_text().split(") ")[1][0] != "Z"]
    return found


def test_down_leaves_nothing_behind_and_can_run_twice(tmp_path):
    lab = Lab(tmp_path / "lab")
    lab.up(2, ["secure", "exim-secure"], subnet="10.96.0.0/24", prefix="rmdown")
    pids = [p for h in lab.hosts for p in (h.pid, h.init_pid) if p]
    assert len(pids) == 4
    assert any(str(tmp_path) in line for line in Path("/proc/mounts").read_text().splitlines())  # the Exim layer
    lab.down()
    assert _leftovers("rmdown", pids) == []
    assert not any(str(tmp_path) in line for line in Path("/proc/mounts").read_text().splitlines())
    Lab(tmp_path / "lab").down()
    assert not (tmp_path / "lab").exists()


def test_down_cleans_up_after_a_crash_half_way_through_up(tmp_path):
    state = tmp_path / "lab"
    code = (f"from remediate.lab import Lab; Lab({str(state)!r}).up(4, ['secure'], subnet='10.95.0.0/24', "
            "prefix='rmcrash')")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # kill it once it has started at least one host
        data = json.loads((state / "lab.json").read_text()) if (state / "lab.json").exists() else {}
        if any(h.get("init_pid") for h in data.get("hosts", [])):
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    data = json.loads((state / "lab.json").read_text())
    pids = [p for h in data["hosts"] for p in (h["pid"], h["init_pid"]) if p]
    Lab(state).down()
    assert _leftovers("rmcrash", pids) == []


def test_stop_and_start_sshd_and_mta(lab):
    host = host_named(lab, "secure")

    def answering() -> dict[str, bool]:
        row = next(r for r in lab.status() if r["name"] == host.name)
        return {"sshd": bool(row["sshd"]), "mta": bool(row["mta"])}

    lab.service(host.name, "mta", "stop")
    lab.service(host.name, "sshd", "stop")
    try:
        assert answering() == {"sshd": False, "mta": False}
    finally:
        lab.service(host.name, "mta", "start")
        lab.service(host.name, "sshd", "start")
    assert answering() == {"sshd": True, "mta": True}
