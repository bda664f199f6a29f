"""The driver contract: what every MTA driver must do on a real host of its MTA, run unchanged per driver.

Like SQLAlchemy's dialect compliance suite: a new driver adds its lab scenarios to `CASES` and must pass
every test here as written. Each test talks to a real lab host (real sshd, real MTA) through the real
shell, and checks files through the host's own root on this machine, not through the tool.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import pytest
import structlog

from remediate import mta
from remediate.backup import BackupStore
from remediate.errors import ValidationError
from remediate.inventory import load_inventory
from remediate.model import Host, Status
from remediate.mta import Driver
from remediate.phases import bring_up, reinstate
from remediate.shell import open_shell
from remediate.verify import answering, outside_probe, probe_until_secure
from tests.integration.checks import FOREIGN, rcpt


@dataclass(frozen=True)
class Case:
    """A driver and the lab scenarios that exercise it: one vulnerable to relay, one secure as shipped."""

    driver: str
    vulnerable: str
    secure: str


CASES = [Case("postfix", vulnerable="open-relay", secure="secure"),
         Case("exim", vulnerable="exim-relay-nets", secure="exim-secure"),
         Case("sendmail", vulnerable="sendmail-promiscuous", secure="sendmail-secure")]


def _lab_host(lab, scenario: str, avoid: tuple[str, ...] = ()) -> Host:
    """The last lab host in `scenario` (spares come last, so the core tests' hosts are left alone)."""
    name = [h.name for h in lab.hosts if h.scenario == scenario and h.name not in avoid][-1]
    lab.reset(name)
    return next(h for h in load_inventory(lab.inventory_path).hosts if h.name == name)


def _state(lab, host: Host, driver: Driver) -> dict[str, tuple[str, int, int]]:
    """{path: (sha256, mtime_ns, mode)} of every file under the driver's config dir and every derived file,
    read through the host's root on this machine."""
    root = lab.path(host.name, "/")
    paths = [p for p in (root / driver.playbook.config_dir.lstrip("/")).rglob("*") if p.is_file()]
    paths += [root / d.lstrip("/") for d in driver.playbook.derived if (root / d.lstrip("/")).is_file()]
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns,
                                       p.stat().st_mode) for p in sorted(paths)}


@pytest.fixture(params=CASES, ids=lambda c: c.driver)
def case(request, lab):
    return request.param


def test_discover_and_detect_find_the_driver_on_its_host(lab, case):
    host = _lab_host(lab, case.vulnerable)
    with open_shell(host) as shell:
        driver = mta.driver_for(case.driver)
        assert driver.discover(shell)
        assert mta.detect(shell) == case.driver   # what `mta: auto` picks
        facts = driver.read(shell)
    root = lab.path(host.name, "/")
    for name, path in driver.playbook.files.items():   # a file the host does not have reads as empty
        on_host = root / path.lstrip("/")
        assert facts.raw[name] == (on_host.read_bytes() if on_host.exists() else b"")
        if on_host.exists():
            assert facts.stats[name].mtime_ns == on_host.stat().st_mtime_ns


def test_audit_explains_the_vulnerable_host_and_clears_the_secure_one(lab, case):
    driver = mta.driver_for(case.driver)
    for scenario, exposed in ((case.vulnerable, True), (case.secure, False)):
        host = _lab_host(lab, scenario)
        with open_shell(host) as shell:
            findings = driver.audit(driver.read(shell).texts(), host)
        relay = [f for f in findings if f.code in ("open_relay", "anonymous_auth")]
        assert bool(relay) == exposed, (scenario, findings)
        assert all(f.file and f.line and f.parameter for f in relay), relay


def test_transforms_are_idempotent_and_leave_nothing_to_find(lab, case):
    host = _lab_host(lab, case.vulnerable)
    driver = mta.driver_for(case.driver)
    policy = driver.playbook.policies[host.policy]
    with open_shell(host) as shell:
        facts = driver.read(shell)
    cand = driver.candidate(facts, host, policy)
    assert cand.changed and cand.diff
    again = driver.candidate(type(facts)(
        {n: cand.data(n) for n in facts.raw}, facts.stats, facts.outputs, facts.derived), host, policy)
    assert again.changed == () and again.diff == ""
    assert not [f for f in driver.audit(cand.texts, host) if f.code in ("open_relay", "anonymous_auth")]


def test_validate_never_writes_live_files_and_never_approves_the_vulnerable_config(lab, case):
    host = _lab_host(lab, case.vulnerable)
    driver = mta.driver_for(case.driver)
    policy = driver.playbook.policies[host.policy]
    before = _state(lab, host, driver)
    with open_shell(host) as shell:
        facts = driver.read(shell)
        fixed = driver.validate(shell, facts, driver.candidate(facts, host, policy), host, policy)
        try:   # the configuration as it is: refused outright (e.g. m4 warns), or simulated as vulnerable
            as_is = driver.validate(shell, facts, driver.candidate(facts, host, replace(policy, steps=())), host,
                                    policy)
        except ValidationError:
            as_is = None
    assert fixed.verdict.status is Status.SECURE, fixed.transcript
    if as_is is not None:
        assert as_is.verdict.status is Status.VULNERABLE and "open_relay" in as_is.verdict.codes, as_is.transcript
    assert _state(lab, host, driver) == before
    assert not list(lab.path(host.name, "/tmp").glob("remediate-*")), "validation left its private copy"


def test_activate_then_restore_is_byte_identical_with_the_mta_answering(lab, case, tmp_path):
    host = _lab_host(lab, case.vulnerable)
    driver = mta.driver_for(case.driver)
    policy = driver.playbook.policies[host.policy]
    before = _state(lab, host, driver)
    store = BackupStore(tmp_path)
    with open_shell(host) as shell:
        facts = driver.read(shell)
        cand = driver.candidate(facts, host, policy)
        manifest = store.save(shell, "20261129T000000Z-c0de", driver.playbook.label, driver.backup_set(facts, cand))
        assert {r.path for r in manifest.files} >= {driver.playbook.files[n] for n in cand.changed}
        assert {r.path for r in manifest.files if r.kind == "derived"} == set(facts.derived)
        for name in cand.changed:
            st = facts.stats[name]
            shell.write_atomic(driver.playbook.files[name], cand.data(name), mode=st.mode, uid=st.uid, gid=st.gid)
        driver.check_live(shell)
        bring_up(shell, driver, host, structlog.get_logger())   # activate and await the banner, as apply does
        verdict, _ = probe_until_secure(host, driver.probe_context(host, facts), policy.expect_local)
        assert verdict.status is Status.SECURE, verdict.reasons
        assert rcpt(host.address, FOREIGN) not in (250, 251)   # refused or deferred, as the policy allows
        reinstate(shell, driver, host, store.contents(shell, manifest), structlog.get_logger())   # as rollback does
        shell.remove(f"{shell.backup_root}/{manifest.run_id}", recursive=True)
    assert _state(lab, host, driver) == before
    again, result = outside_probe(host, driver.probe_context(host, None), policy.expect_local)
    assert answering(result) and "open_relay" in again.codes   # back as it was: vulnerable, and answering
