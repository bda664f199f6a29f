"""Sendmail lab hosts (Debian's packages, unpacked into each host's layer) as the outside world sees them.

There is no Sendmail driver yet: these hosts are scanned from outside only, and plan/apply skip them with
the reason. What is checked here is that every scenario is what it claims (nmap and a hand-made AUTH
ANONYMOUS agree with the probe) and that the probe judges real Sendmail right: its secure hosts are
`secure`, not `inconclusive` (the local-delivery check needs no DNS), its open ones `vulnerable`.
"""

from __future__ import annotations

import json

from remediate.lab import SCENARIOS
from tests.conftest import run_cli
from tests.integration.checks import auth_anonymous_accepted, nmap_open_relay, snapshot


def test_sendmail_hosts_are_judged_by_the_probe_as_nmap_and_auth_anonymous_judge_them(lab, tmp_path):
    hosts = [h for h in lab.hosts if SCENARIOS[h.scenario].mta == "sendmail"]
    assert len({h.scenario for h in hosts}) >= 6, "the test lab runs every Sendmail scenario"
    for h in hosts:
        lab.reset(h.name)
    before = {h.name: snapshot(lab.path(h.name, "/"), "etc/mail") for h in hosts}
    limit = ",".join(h.name for h in hosts)
    proc = run_cli("scan", "-i", str(lab.inventory_path), "--limit", limit, "--report", "scan.json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    got = {h["name"]: h for h in json.loads((tmp_path / "scan.json").read_text())["hosts"]}
    nmap = nmap_open_relay(*(h.address for h in hosts))
    for h in hosts:
        expected = set(SCENARIOS[h.scenario].findings)
        result = got[h.name]
        assert result["status"] == ("vulnerable" if expected else "secure"), (h.scenario, result)
        assert {f["code"] for f in result["findings_before"]} == expected, (h.scenario, result)
        if "anonymous_auth" not in expected:   # relay after an anonymous login is beyond nmap's tests
            assert nmap[h.address] == ("open_relay" in expected), h.scenario
        assert auth_anonymous_accepted(h.address) == ("anonymous_auth" in expected), h.scenario
        assert any("no driver for sendmail" in n for n in result["notes"]) or expected

    plan = run_cli("plan", "-i", str(lab.inventory_path), "--limit", limit, "--report", "plan.json", cwd=tmp_path)
    assert plan.returncode == 1
    assert {h["status"] for h in json.loads((tmp_path / "plan.json").read_text())["hosts"]} == {"skipped"}
    for h in hosts:
        assert snapshot(lab.path(h.name, "/"), "etc/mail") == before[h.name], "scan or plan touched a host"
