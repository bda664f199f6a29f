"""Shared fixtures. The lab fixture is the only way tests reach hosts: real sshd, real Postfix and Exim."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

pytest_plugins = ["tests.reliability"]   # docs/RELIABILITY.md from the fault tests (--reliability-doc)

# The suite shares 2 cores with real sshd/Postfix hosts: judge properties, not per-example timing.
settings.register_profile("remediate", deadline=None)
settings.load_profile("remediate")

ROOT = Path(__file__).resolve().parent.parent
# Overridable so two test runs on one machine can each have their own lab.
LAB_STATE = Path(os.environ.get("REMEDIATE_TEST_LAB_STATE", "/run/remediate-lab-test"))
LAB_SUBNET = os.environ.get("REMEDIATE_TEST_LAB_SUBNET", "10.98.0.0/24")
LAB_PREFIX = os.environ.get("REMEDIATE_TEST_LAB_PREFIX", "rmtest")
# one host per scenario, plus spare open-relay hosts for tests that break things on purpose; then one
# Exim host per Exim scenario and one Sendmail host per Sendmail scenario; then the real-world Postfix cases
LAB_SCENARIOS = ["open-relay", "anonymous-auth", "master-override", "access-map", "secure", "messy",
                 "sudo-user", "open-relay", "open-relay",
                 "exim-secure", "exim-relay-nets", "exim-anonymous", "exim-shadowing", "exim-split-no-gate",
                 "exim-unused-relay-nets",
                 "sendmail-secure", "sendmail-promiscuous", "sendmail-connect-octets", "sendmail-to-relay",
                 "sendmail-anonymous", "sendmail-all-addresses",
                 "sender-whitelist", "recipient-whitelist", "anonymous-only", "inbound-refused", "inbound-tempfail",
                 "indirect-mynetworks", "subnet-style", "cidr-host-bits", "extra-services",
                 # faults of the MTA itself (remediate/lab/fault_scenarios.py): mx31
                 "wedged-reload"]


@pytest.fixture(scope="session")
def lab():
    """A lab of every scenario, started once per session and torn down even when tests fail."""
    from remediate.lab import Lab

    if os.geteuid() != 0:
        pytest.fail("the integration tests need root: they build the lab (namespaces, mounts)")
    stale = Lab(LAB_STATE)
    stale.down()  # a previous session killed mid-way must not block this one
    lab = Lab(LAB_STATE)
    lab.up(len(LAB_SCENARIOS), LAB_SCENARIOS, subnet=LAB_SUBNET, prefix=LAB_PREFIX)
    try:
        yield lab
    finally:
        lab.down()


def run_cli(*args: str, cwd: Path | None = None, input: str | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `remediate` command line in a subprocess (real exit codes, no terminal), from this
    checkout's code (first on PYTHONPATH), whichever checkout the installed package points at."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "remediate", *args], cwd=cwd or ROOT, input=input,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": path, **(env or {})})
