"""Choosing the driver after connecting: `mta: auto` detects the MTA; an MTA without a driver never blocks
the fleet (scanned from outside, skipped by plan and apply, with the reason). Real CLI, real lab hosts."""

from __future__ import annotations

import json
import re

from tests.conftest import run_cli
from tests.integration.checks import snapshot


def _inventory(lab, tmp_path, **mtas: str):
    """The lab's inventory with `mta:` set per host (`mx1="auto"`)."""
    text = lab.inventory_path.read_text()
    for name, mta in mtas.items():
        text, count = re.subn(rf"(\n  {name}:\n)", rf"\1    mta: {mta}\n", text)
        assert count == 1, text
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return path


def _hosts(path):
    return {h["name"]: h for h in json.loads(path.read_text())["hosts"]}


def test_auto_detects_the_mta_and_a_driverless_mta_is_scanned_from_outside_and_skipped(lab, tmp_path):
    vulnerable = next(h for h in lab.hosts if h.scenario == "open-relay").name
    driverless = next(h for h in lab.hosts if h.scenario == "anonymous-auth").name
    for name in (vulnerable, driverless):
        lab.reset(name)
    inv = _inventory(lab, tmp_path, **{vulnerable: "auto", driverless: "exchange"})
    limit = f"{vulnerable},{driverless}"
    before = snapshot(lab.path(driverless, "/"))

    scan = run_cli("scan", "-i", str(inv), "--limit", limit, "--report", "scan.json", cwd=tmp_path)
    assert scan.returncode == 1, scan.stdout + scan.stderr
    hosts = _hosts(tmp_path / "scan.json")
    auto, other = hosts[vulnerable], hosts[driverless]
    assert auto["status"] == "vulnerable"
    assert any(f["source"] == "config" and f["file"] == "/etc/postfix/main.cf" for f in auto["findings_before"])
    assert other["status"] == "vulnerable"   # the probe needs no driver: ANONYMOUS is still seen from outside
    assert {f["source"] for f in other["findings_before"]} == {"probe"}
    assert any("no driver for exchange" in n for n in other["notes"])

    plan = run_cli("plan", "-i", str(inv), "--limit", limit, "--report", "plan.json", cwd=tmp_path)
    assert plan.returncode == 1, plan.stdout + plan.stderr   # a skipped host needs attention
    hosts = _hosts(tmp_path / "plan.json")
    assert hosts[vulnerable]["status"] == "would_change" and hosts[vulnerable]["diff"]
    assert hosts[driverless]["status"] == "skipped" and "no driver for exchange" in hosts[driverless]["error"]

    apply = run_cli("apply", "--yes", "-i", str(inv), "--limit", driverless, "--report", "apply.json",
                    cwd=tmp_path)
    assert apply.returncode == 1
    assert _hosts(tmp_path / "apply.json")[driverless]["status"] == "skipped"
    assert snapshot(lab.path(driverless, "/")) == before
