"""Sendmail on the lab, checked from outside: scan → apply → apply again → rollback, and a failed activation.

Real Sendmail 8.17 (Debian's packages, unpacked into each host's layer), real sshd, the real command line.
Verdicts are cross-checked with nmap's smtp-open-relay and a hand-made AUTH ANONYMOUS attempt; files,
sendmail.cf and access.db included, are compared byte for byte through each host's own root.
"""

from __future__ import annotations

import json

import pytest

from remediate.lab import SCENARIOS
from tests.conftest import run_cli
from tests.integration.checks import (
    FOREIGN,
    anonymous_advertised,
    auth_anonymous_accepted,
    nmap_open_relay,
    rcpt,
    snapshot,
)

DIRS = ("etc/mail",)


def _sendmail_hosts(lab):
    return [h for h in lab.hosts if SCENARIOS[h.scenario].mta == "sendmail"]


def _state(lab, name):
    root = lab.path(name, "/")
    return {d: snapshot(root, d) for d in DIRS}


@pytest.fixture(scope="module")
def sendmail(lab, tmp_path_factory):
    hosts = _sendmail_hosts(lab)
    assert len({h.scenario for h in hosts}) >= 6, "the test lab runs every Sendmail scenario"
    for h in hosts:
        lab.reset(h.name)
    return hosts, tmp_path_factory.mktemp("sendmail"), {h.name: _state(lab, h.name) for h in hosts}


def cli(lab, work, *args):
    return run_cli(*args, "-i", str(lab.inventory_path), cwd=work)


def report(work, name):
    return {h["name"]: h for h in json.loads((work / name).read_text())["hosts"]}


def test_scan_flags_exactly_the_vulnerable_sendmail_hosts_and_agrees_with_nmap(lab, sendmail):
    hosts, work, _ = sendmail
    proc = cli(lab, work, "scan", "--limit", ",".join(h.name for h in hosts), "--report", "scan.json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    got = report(work, "scan.json")
    nmap = nmap_open_relay(*(h.address for h in hosts))
    for h in hosts:
        expected = set(SCENARIOS[h.scenario].findings)
        result = got[h.name]
        assert result["status"] == ("vulnerable" if expected else "secure"), (h.scenario, result)
        probe = {f["code"] for f in result["findings_before"] if f["source"] == "probe"}
        assert probe == expected, (h.scenario, result["findings_before"])
        if "anonymous_auth" not in expected:   # relay after an anonymous login is beyond nmap's tests
            assert nmap[h.address] == ("open_relay" in probe), h.scenario
        assert auth_anonymous_accepted(h.address) == ("anonymous_auth" in probe), h.scenario
        if expected:   # explained by the file, line and setting that cause it
            config = [f for f in result["findings_before"] if f["source"] == "config"]
            assert config and all(f["file"].startswith("/etc/mail/") and f["line"] for f in config), result


def test_apply_secures_every_sendmail_host_keeps_local_mail_then_is_idempotent_and_rolls_back(lab, sendmail):
    hosts, work, original = sendmail
    limit = ",".join(h.name for h in hosts)
    proc = cli(lab, work, "apply", "--yes", "--limit", limit, "--report", "apply.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = report(work, "apply.json")
    nmap = nmap_open_relay(*(h.address for h in hosts))
    for h in hosts:
        vulnerable = bool(SCENARIOS[h.scenario].findings)
        assert got[h.name]["status"] == ("changed" if vulnerable else "unchanged"), got[h.name]
        assert not nmap[h.address], f"{h.name} ({h.scenario}) still relays"
        assert rcpt(h.address, FOREIGN) >= 500
        assert rcpt(h.address, f"postmaster@{h.fqdn}", sender="") == 250, "inbound mail for its own domain broken"
        assert not anonymous_advertised(h.address)
        if not vulnerable:
            assert _state(lab, h.name) == original[h.name], "a secure host was touched"

    again = cli(lab, work, "apply", "--yes", "--limit", limit, "--report", "again.json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert {r["status"] for r in report(work, "again.json").values()} == {"unchanged"}

    back = cli(lab, work, "rollback", "--yes", "--limit", limit, "--report", "rollback.json")
    assert back.returncode == 0, back.stdout + back.stderr
    for h in hosts:
        assert _state(lab, h.name) == original[h.name], f"{h.name}: not byte-identical after rollback"
        assert rcpt(h.address, f"postmaster@{h.fqdn}", sender="") == 250


def test_a_failed_sendmail_activation_rolls_back_byte_identical_with_sendmail_answering(lab, sendmail):
    hosts, work, _ = sendmail
    host = next(h for h in hosts if h.scenario == "sendmail-promiscuous")
    lab.reset(host.name)
    before = _state(lab, host.name)
    # the live access map's rebuild fails once (the candidate's, in the private copy, still builds)
    lab.exec(host.name, ["rm", "-f", "/usr/sbin/makemap"], check=True)
    script = ("#!/bin/sh\nif [ \"$2\" = /etc/mail/access ] && [ ! -e /run/sabotaged ]; then touch /run/sabotaged; "
              "echo 'makemap: cannot rebuild (injected)' >&2; exit 1; fi\nexec /usr/libexec/sendmail/makemap \"$@\"\n")
    lab.exec(host.name, ["sh", "-c", "cat > /usr/sbin/makemap && chmod 755 /usr/sbin/makemap"], input=script,
             check=True)
    try:
        proc = cli(lab, work, "apply", "--yes", "--limit", host.name, "--report", "fault.json")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        result = report(work, "fault.json")[host.name]
        assert result["status"] == "rolled_back" and "injected" in result["error"], result
        assert _state(lab, host.name) == before, "not byte-identical (sendmail.cf and access.db included)"
        assert rcpt(host.address, f"postmaster@{host.fqdn}", sender="") == 250, "Sendmail not answering"
    finally:
        lab.reset(host.name)
