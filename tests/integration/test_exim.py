"""Exim's policy auth-all on a real Exim lab host, through the real command line (the scan/apply/rollback
lifecycle Exim shares with Sendmail is tested in test_lifecycle.py)."""

from __future__ import annotations

import json

from tests.conftest import run_cli
from tests.integration.checks import FOREIGN, rcpt


def test_policy_auth_all_on_exim_refuses_every_unauthenticated_recipient(lab, tmp_path):
    host = next(h for h in lab.hosts if h.scenario == "exim-relay-nets")
    lab.reset(host.name)
    inv = tmp_path / "inventory.yaml"
    inv.write_text(lab.inventory_path.read_text().replace("  policy: relay-auth", "  policy: auth-all"))
    try:
        proc = run_cli("apply", "--yes", "-i", str(inv), "--limit", host.name, "--report", "a.json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads((tmp_path / "a.json").read_text())["hosts"][0]["status"] == "changed"
        assert rcpt(host.address, FOREIGN) // 100 == 5
        assert rcpt(host.address, f"postmaster@{host.fqdn}") // 100 == 5   # submission-only: nothing unauthenticated
        assert "!authenticated = *" in lab.path(host.name, "/etc/exim4/exim4.conf.template").read_text()
        proc = run_cli("scan", "-i", str(inv), "--limit", host.name, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        lab.reset(host.name)
