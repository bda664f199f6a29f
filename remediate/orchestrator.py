"""Per-host flows of scan, plan, apply, rollback and resume, over drivers, shells, backups and the phase machine.

Changing runs are sequences of steps of the phase machine (`remediate.phases`). apply, per host:

    connect → driver (inventory mta, or detected for `auto`) → read → transform (pure)
    → probe from outside (in a thread, joined before the backup) → [unchanged: stop, touch nothing] → lock
    → validate the candidate (private copy + simulated session) → back up (local, then host)
    → write atomically → check → activate → probe from outside → verified
      └─ any failure after the backup → restore byte-identical resources, activate, re-probe → rolled_back

rollback and resume reuse the same steps: restore is the backup's undo, and the activation tail
(check, activate, verify) exists once (`phases.TAIL`). Nothing here names an MTA: drivers do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from remediate import lock, mta
from remediate.backup import BackupStore, restore
from remediate.errors import (
    DriverError,
    NoBackupError,
    PlanMismatch,
    RemediateError,
    TransportError,
    ValidationError,
)
from remediate.journal import Journal
from remediate.model import (
    POLICY_EXPECTS,
    UNWRITTEN,
    Finding,
    Host,
    HostPlan,
    HostResult,
    Phase,
    Plan,
    PlannedHost,
    ProbeContext,
    Status,
)
from remediate.mta import Candidate, Driver, Facts
from remediate.phases import (
    APPLY,
    ROLLBACK,
    TAIL,
    HostContext,
    Txn,
    prove,
    roll_back,
    run_steps,
)
from remediate.shell import Shell, connect, open_shell
from remediate.verdict import SECURITY, Verdict
from remediate.verify import outside_probe

log = structlog.get_logger()


@dataclass(slots=True)
class Settings:
    """What one run needs besides the hosts: where things live and how hard to try."""

    run_id: str
    backups: Path = Path("backups")
    runs: Path = Path("runs")
    playbooks: Path | None = None
    forks: int = 10
    break_lock: bool = False
    planned: Plan | None = None          # apply --plan: only these hosts, only as planned
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def store(self) -> BackupStore:
        return BackupStore(self.backups)


# ---------------------------------------------------------------------- per host
def _on_host(host: Host, settings: Settings, work: Callable[[Shell, Driver], HostResult]) -> HostResult:
    """Connect, pick the driver, `work`; `unreachable` when SSH fails to connect, `skipped` (with why)
    when no driver can work the host. The shell is closed afterwards."""
    if host.mta != "auto" and not mta.has_driver(host.mta):
        return _skipped_no_driver(host)
    try:
        shell = connect(host)
    except TransportError as exc:
        log.warning("unreachable", host=host.name, error=str(exc))
        return HostResult(host.name, host.address, Status.UNREACHABLE, error=str(exc))
    try:
        try:
            driver = mta.resolve(host, shell, settings.playbooks)
        except DriverError as exc:
            return HostResult(host.name, host.address, Status.SKIPPED, error=f"not worked: {exc}")
        return work(shell, driver)
    finally:
        shell.close()


def _skipped_no_driver(host: Host) -> HostResult:
    return HostResult(host.name, host.address, Status.SKIPPED,
                      error=f"not worked: no driver for {host.mta} yet (scan still probes it from outside)")


def _context(host: Host, shell: Shell, driver: Driver, settings: Settings, journal: Journal, run_id: str,
             **bind: Any) -> HostContext:
    return HostContext(host, driver, driver.playbook.policies[host.policy], shell, settings.store, journal,
                       log.bind(run_id=run_id, host=host.name, mta=driver.name, **bind), run_id)


# ---------------------------------------------------------------------- scan
def scan_host(host: Host, settings: Settings) -> HostResult:
    """Probe from outside; where SSH and a driver work, read the configuration to explain each finding."""
    facts: Facts | None = None
    driver: Driver | None = None
    notes: list[str] = []
    explained: tuple[Finding, ...] = ()
    if host.mta == "auto" or mta.has_driver(host.mta):
        try:
            with open_shell(host) as shell:
                driver = mta.resolve(host, shell, settings.playbooks)
                facts = driver.read(shell)
                explained = driver.audit(facts.texts(), host, facts.outputs)
        except RemediateError as exc:
            notes.append(f"configuration not read over SSH ({exc}); verdict from the probe alone")
    else:
        notes.append(f"no driver for {host.mta} yet: verdict from the probe alone, findings name no configuration "
                     "cause")
    context = driver.probe_context(host, facts) if driver else ProbeContext(local_domain=host.mail_domain)
    expect = driver.playbook.policies[host.policy].expect_local if driver else POLICY_EXPECTS[host.policy]
    verdict, result = outside_probe(host, context, expect)
    if result.banner is None and not result.connected:
        return HostResult(host.name, host.address, Status.UNREACHABLE, error="; ".join(result.errors) or
                          "no SMTP answer", notes=tuple(notes))
    status = verdict.status
    if status is Status.SECURE and any(f.code in SECURITY for f in explained):
        # refused from here, but the configuration allows it (to another sender, recipient or network, or
        # once a masking setting changes): apply would change it, so scan must not call the host secure
        status = Status.VULNERABLE
        notes.append("the probe from here was refused, but the configuration allows it (findings from the "
                     "configuration)")
    # what the configuration exposes is a finding unless all is well; the cause of a health finding the
    # probe saw (inbound mail refused: which list, which line) is one too
    shown = tuple(f for f in explained if status is not Status.SECURE or f.code in verdict.codes)
    findings = verdict.findings + shown
    notes += [r for r in verdict.reasons if status is not Status.VULNERABLE]
    notes += [f.text for f in explained if f not in shown]
    return HostResult(host.name, host.address, status, findings_before=findings, notes=tuple(notes))


# ---------------------------------------------------------------------- plan
def plan_host(host: Host, settings: Settings) -> HostResult:
    """Read, transform, validate the candidate on the host (private copy), simulate; change nothing."""
    def work(shell: Shell, driver: Driver) -> HostResult:
        policy = driver.playbook.policies[host.policy]
        try:
            facts = driver.read(shell)
            cand = driver.candidate(facts, host, policy)
            base = HostResult(host.name, host.address, Status.FAILED, driver.audit(facts.texts(), host, facts.outputs),
                              driver.audit(cand.texts, host, facts.outputs), bool(cand.changed), diff=cand.diff or None)
            sim = prove(shell, driver, facts, cand, host, policy)
        except TransportError as exc:
            return HostResult(host.name, host.address, Status.UNREACHABLE, error=str(exc))
        except ValidationError as exc:
            return replace(base, error=str(exc))
        except RemediateError as exc:
            return HostResult(host.name, host.address, Status.FAILED, error=str(exc))
        return replace(base, status=Status.WOULD_CHANGE if cand.changed else Status.COMPLIANT,
                       simulation=sim.transcript, plan=_host_plan(shell, driver, facts, cand))

    return _on_host(host, settings, work)


def _host_plan(shell: Shell, driver: Driver, facts: Facts, cand: Candidate) -> HostPlan:
    """What an approval of this host pins: the host key seen, the driver, the images, the commands."""
    resources, candidate = driver.images(facts, cand)
    validate, activate = driver.commands()
    return HostPlan(shell.peer_fingerprint, driver.name, driver.playbook.label, driver.digest(), resources,
                    candidate, validate, activate)


# ---------------------------------------------------------------------- apply
def apply_host(host: Host, settings: Settings, journal: Journal) -> HostResult:
    """The transactional state machine for one host (see the module docstring). With an approved plan,
    a host that is not what the plan saw (address, host key, driver, resources) is `skipped`, untouched,
    with the reason (`PlanMismatch`)."""
    planned = settings.planned.hosts[host.name] if settings.planned is not None else None
    if planned is not None and planned.address != host.address:
        return _mismatch(host, PlanMismatch("address changed", f"the inventory gives {host.address}, the plan was "
                                            f"made for {planned.address}; nothing was contacted"))

    def work(shell: Shell, driver: Driver) -> HostResult:
        if planned is not None:
            try:
                _check_connection(shell, driver, planned)
            except PlanMismatch as exc:
                return _mismatch(host, exc)
        return _apply(_context(host, shell, driver, settings, journal, settings.run_id), planned, settings.break_lock)

    return _on_host(host, settings, work)


def _check_connection(shell: Shell, driver: Driver, planned: PlannedHost) -> None:
    """The host answers with the key and runs the driver the plan saw (PlanMismatch otherwise)."""
    seen, approved = shell.peer_fingerprint, planned.plan.host_key
    if approved is not None and seen != approved:
        raise PlanMismatch("host key changed", f"the host key is now {seen}, the plan saw {approved} (known_hosts "
                           "changed since the approval); nothing was touched. Check the key out of band")
    if driver.name != planned.plan.driver:
        raise PlanMismatch("driver changed", f"the host now runs {driver.name}, the plan was made for "
                           f"{planned.plan.driver}; nothing was touched")


def _mismatch(host: Host, exc: PlanMismatch) -> HostResult:
    log.warning("not_as_planned", host=host.name, reason=exc.reason, error=str(exc))
    return HostResult(host.name, host.address, Status.SKIPPED, error=f"{exc.reason}: {exc}", reason=exc.reason)


def _apply(ctx: HostContext, planned: PlannedHost | None, break_lock: bool) -> HostResult:
    host, driver = ctx.host, ctx.driver
    txn = Txn(HostResult(host.name, host.address, Status.FAILED))
    try:
        txn.facts = driver.read(ctx.shell)
        txn.cand = driver.candidate(txn.facts, host, ctx.policy)
        if planned is not None:   # before anything is written (or even probed)
            driver.check_against_plan(txn.facts, txn.cand, planned)
    except PlanMismatch as exc:
        return _mismatch(host, exc)
    except RemediateError as exc:
        return replace(txn.result, error=str(exc))
    audit = driver.audit(txn.facts.texts(), host, txn.facts.outputs)
    txn.result = replace(txn.result, diff=txn.cand.diff or None)
    # the outside probe of the live configuration runs while the lock is taken and the candidate validated;
    # `txn.before` joins it, at the latest before anything is written (phases.APPLY's `baseline` step)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"probe-{host.name}") as pool:
        probing = pool.submit(outside_probe, host, driver.probe_context(host, txn.facts), ctx.policy.expect_local)

        def before() -> Verdict:
            verdict, txn.probed = probing.result()
            txn.result = replace(txn.result, findings_before=verdict.findings + audit)
            txn.inbound_before = verdict.local_ok
            return verdict

        txn.before = before
        if not txn.cand.changed:
            before_v = before()
            ctx.log.info("unchanged")
            if before_v.status is Status.VULNERABLE:
                return replace(txn.result, findings_after=txn.result.findings_before, error="still vulnerable and "
                               "the playbook has no change for it: " + "; ".join(before_v.reasons))
            return replace(txn.result, status=Status.UNCHANGED, notes=tuple(before_v.reasons))
        try:
            with lock.held(ctx.shell, ctx.run_id, break_lock=break_lock, log=ctx.log):
                ctx.journal.record(host.name, Phase.LOCKED)
                failed = run_steps(ctx, txn, APPLY)
        except RemediateError as exc:   # the lock could not be taken: nothing was touched
            before()
            return replace(txn.result, error=str(exc))
        before()
    if failed is not None:
        return replace(failed, findings_before=txn.result.findings_before)
    ctx.journal.record(host.name, Phase.DONE)
    ctx.log.info("verified")
    assert txn.verdict is not None
    return replace(txn.result, status=Status.CHANGED, changed=True, findings_after=txn.verdict.findings,
                   notes=(_fixed(txn.result.findings_before, txn.verdict.findings, txn.proof), *txn.result.notes))


def _fixed(before: tuple[Finding, ...], after: tuple[Finding, ...], proof: str) -> str:
    """What a change fixed and how it was verified: "fixed open_relay; verified: 19/19 relay tests refused, ..."."""
    gone = sorted({f.code for f in before} - {f.code for f in after})
    return f"fixed {', '.join(gone) or 'the configuration'}; verified: {proof}"


# ---------------------------------------------------------------------- rollback
def latest_run_for(shell: Shell, store: BackupStore) -> str | None:
    """The newest run with a backup of this host, locally or on the host."""
    local = [run for _, run in store.runs(shell.name)]
    remote = [r for r in shell.listdir(shell.backup_root) if r[:8].isdigit()]
    runs = sorted(set(local) | set(remote))
    return runs[-1] if runs else None


def rollback_host(host: Host, settings: Settings, run_id: str | None, journal: Journal) -> HostResult:
    """Restore the backup of `run_id` (newest by default): verify every copy first, then write."""
    return _on_host(host, settings, lambda shell, driver: _rollback(
        _context(host, shell, driver, settings, journal, settings.run_id), run_id, settings.break_lock))


def _rollback(ctx: HostContext, run_id: str | None, break_lock: bool) -> HostResult:
    txn = Txn(HostResult(ctx.host.name, ctx.host.address, Status.FAILED))
    store = ctx.store
    try:
        target = run_id or latest_run_for(ctx.shell, store)
        if target is None:
            return replace(txn.result, status=Status.SKIPPED, notes=("no backup of this host",))
        try:
            txn.manifest = store.manifest(ctx.shell, target)
        except NoBackupError:
            if run_id is None:
                raise
            cleared = lock.clear_dead(ctx.shell, target, ctx.log)
            return replace(txn.result, status=Status.SKIPPED, backup_id=target, notes=(
                f"run {target} did not change this host" + ("; removed the lock it left behind" if cleared else ""),))
        warnings: list[str] = []
        txn.records = store.contents(ctx.shell, txn.manifest, warnings)
        for warning in warnings:
            ctx.log.warning("backup_copy_refused", detail=warning)
        txn.result = replace(txn.result, backup_id=target, notes=tuple(warnings))
        with lock.held(ctx.shell, ctx.run_id, break_lock=break_lock, adopt=frozenset({target}),
                       log=ctx.log):
            ctx.journal.record(ctx.host.name, Phase.LOCKED, restoring=target)
            return _restore_run(ctx, txn, target)
    except TransportError as exc:
        return replace(txn.result, status=Status.UNREACHABLE, error=str(exc))
    except RemediateError as exc:
        ctx.log.error("rollback_failed", error=str(exc))
        return replace(txn.result, error=str(exc))


def _restore_run(ctx: HostContext, txn: Txn, target: str) -> HostResult:
    txn.written = restore(ctx.shell, txn.records)
    if not txn.written:
        ctx.journal.record(ctx.host.name, Phase.DONE)
        return replace(txn.result, status=Status.SKIPPED,
                       notes=txn.result.notes + (f"files already identical to the backup of run {target}",))
    ctx.journal.record(ctx.host.name, Phase.WRITTEN, files=txn.written)
    failed = run_steps(ctx, txn, ROLLBACK)
    if failed is not None:
        return failed
    ctx.journal.record(ctx.host.name, Phase.DONE)
    ctx.log.info("restored", run=target, files=txn.written)
    assert txn.verdict is not None
    vulnerable = txn.verdict.status is Status.VULNERABLE
    again = ["the host is vulnerable again, as it was before that run"] if vulnerable else []
    return replace(txn.result, status=Status.RESTORED, changed=True, findings_after=txn.verdict.findings,
                   notes=txn.result.notes + tuple([f"restored {', '.join(txn.written)} from run {target}", *again]))


# ---------------------------------------------------------------------- resume
def resume_host(host: Host, settings: Settings, run_id: str, phase: str | None, journal: Journal) -> HostResult:
    """Finish or roll back one host of the interrupted run `run_id` from its last recorded phase.

    Nothing written yet (started/locked/failed): release the dead run's lock, done. Otherwise the
    candidate is recomputed from the backed-up originals: if every file already holds it, the run is
    finished (check, activate, verify from outside); if not (a write was cut short), the host is restored."""
    if phase in (None, Phase.DONE.value):
        return HostResult(host.name, host.address, Status.SKIPPED, backup_id=run_id,
                          notes=(f"nothing to resume (last phase: {phase or 'none'})",))
    return _on_host(host, settings, lambda shell, driver: _resume(
        _context(host, shell, driver, settings, journal, run_id, resume=True), Phase(phase)))


def _resume(ctx: HostContext, phase: Phase) -> HostResult:
    txn = Txn(HostResult(ctx.host.name, ctx.host.address, Status.FAILED, backup_id=ctx.run_id))
    try:
        with lock.held(ctx.shell, ctx.run_id, adopt=frozenset({ctx.run_id}), log=ctx.log):
            if phase in UNWRITTEN:
                ctx.journal.record(ctx.host.name, Phase.DONE, resumed_from=phase.value)
                return replace(txn.result, status=Status.UNCHANGED, backup_id=None,
                               notes=(f"interrupted at {phase.value}: nothing had been written",))
            store = ctx.store
            txn.manifest = store.manifest(ctx.shell, ctx.run_id)
            txn.records = store.contents(ctx.shell, txn.manifest)
            originals = {rec.path: data for rec, data in txn.records.items()}
            txn.facts = ctx.driver.read(ctx.shell)
            txn.cand = ctx.driver.candidate(ctx.driver.with_originals(txn.facts, originals), ctx.host, ctx.policy)
            txn.result = replace(txn.result, diff=txn.cand.diff or None)
            files = ctx.driver.playbook.files
            if any(txn.facts.raw[n] != txn.cand.data(n) for n in files):
                return roll_back(ctx, txn, f"interrupted at {phase.value} before every file was written")
            failed = run_steps(ctx, txn, TAIL, undos=(roll_back,))
    except RemediateError as exc:
        return replace(txn.result, error=str(exc))
    if failed is not None:
        return failed
    ctx.journal.record(ctx.host.name, Phase.DONE)
    assert txn.verdict is not None
    return replace(txn.result, status=Status.CHANGED, changed=True, findings_after=txn.verdict.findings,
                   notes=(f"finished from phase {phase.value}", *txn.result.notes))
