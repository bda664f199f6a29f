"""The phase machine: one frozen context per host, and changing runs as sequences of (phase, do, undo) steps.

`run_steps` runs `Step`s in order, journals each step's phase (fsynced) once its `do` succeeded and, when
a later step fails, runs the `undo` of the newest step done that has one (the backup's undo is the
restore: `roll_back`). The sequences: `APPLY` (validate the candidate, join the outside probe of the live
configuration that ran meanwhile, back up, write, then `TAIL`), `TAIL` (check, activate, verify from
outside; shared by apply and resume) and `ROLLBACK` (check, activate, the MTA answers). Steps reach the
host only through the driver, the shell and the backup store.

Every activation (apply, resume, rollback, and the restore of a failed apply) goes through `bring_up`: the
driver's activation, then a bounded wait for the SMTP banner; an MTA that does not greet (wedged on
reload) or whose activation hangs is restarted by its driver and waited for again, and the result's notes
say what was escalated and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from remediate.backup import BackupStore, FileRecord, Manifest, restore, sha256
from remediate.errors import CommandError, CommandTimeout, DriverError, RemediateError, TransportError, ValidationError
from remediate.journal import Journal
from remediate.model import Host, HostResult, Phase, Status
from remediate.mta import Candidate, Driver, Facts, Simulation, unchanged
from remediate.mta.playbook import Policy
from remediate.shell import Shell
from remediate.smtp import ProbeResult
from remediate.verdict import SERVICE_BROKEN, Verdict
from remediate.verify import answering, await_banner, outside_probe, probe_until_secure, proof


@dataclass(frozen=True, slots=True)
class HostContext:
    """Everything a host's steps share for one run; `run_id` owns the lock and the backup."""

    host: Host
    driver: Driver
    policy: Policy
    shell: Shell
    store: BackupStore
    journal: Journal
    log: Any
    run_id: str


@dataclass(slots=True)
class Txn:
    """What a host's steps learn as they go."""

    result: HostResult
    facts: Facts | None = None
    cand: Candidate | None = None
    manifest: Manifest | None = None
    records: dict[FileRecord, bytes] = field(default_factory=dict)
    verdict: Verdict | None = None
    proof: str = ""          # what the verification probe proved, in words
    written: list[str] = field(default_factory=list)
    #: the live files are the validated candidate, byte for byte (sha256 read back after this run's write)
    confirmed: bool = False
    #: whether the outside probe before the change saw inbound mail for the host's domain accepted
    #: (None: not known, which counts as accepted: a refusal after the change is then a regression)
    inbound_before: bool | None = None
    #: joins the outside probe of the live configuration (run in the background while the lock is taken and
    #: the candidate validated) into `result.findings_before` and `inbound_before`; None: already known
    before: Callable[[], Any] | None = None
    #: what that probe saw of the probe port (set when it is joined)
    probed: ProbeResult | None = None


Do = Callable[[HostContext, Txn], None]
Undo = Callable[[HostContext, Txn, str], HostResult]


@dataclass(frozen=True, slots=True)
class Step:
    """`do` the work, then journal `phase` (None: not journalled); `undo` puts the host back if a later
    step fails; `failure` prefixes the error of a failed `do`."""

    phase: Phase | None
    do: Do
    undo: Undo | None = None
    failure: str = ""


def run_steps(ctx: HostContext, txn: Txn, steps: Sequence[Step], undos: Sequence[Undo] = ()) -> HostResult | None:
    """Run `steps` in order. None when all succeeded; else the result of undoing the done steps (newest
    undo first), or `failed` with the error when there was nothing to undo."""
    pending = list(undos)
    for step in steps:
        try:
            step.do(ctx, txn)
        except RemediateError as exc:
            reason = step.failure + str(exc)
            ctx.log.error("step_failed", phase=step.phase.value if step.phase else None, error=reason)
            if pending:
                return pending[-1](ctx, txn, reason)
            ctx.journal.record(ctx.host.name, Phase.FAILED, reason=reason)
            return replace(txn.result, error=reason)
        if step.phase is not None:
            ctx.journal.record(ctx.host.name, step.phase, **_detail(step.phase, txn))
        if step.undo is not None:
            pending.append(step.undo)
    return None


def _detail(phase: Phase, txn: Txn) -> dict[str, Any]:
    if phase is Phase.BACKED_UP and txn.manifest is not None:
        return {"files": sorted(r.path for r in txn.manifest.files)}
    if phase is Phase.RESTORED and txn.written:
        return {"files": list(txn.written)}
    return {}


NOT_AN_MX = "inbound mail refused before and after the change: not an MX (not a regression)"


def prove(shell: Shell, driver: Driver, facts: Facts, cand: Candidate, host: Host, policy: Policy) -> Simulation:
    """Validate the candidate (the driver's private copy and simulated outside session) and judge it against
    the host's own baseline: it must be secure, and where the policy keeps inbound mail (`expect_local:
    accept`) mail for the host's domain refused by the candidate must already be refused by the live
    configuration (simulated the same way, only then). ValidationError otherwise."""
    sim = driver.validate(shell, facts, cand, host, policy)
    if sim.verdict.status is not Status.SECURE:
        hint = ("; the MTA ended the session at once or never answered: it logs why (a bad parameter value) only "
                "to the host's mail log when run without a terminal, and the candidate's diff shows what changed"
                if SERVICE_BROKEN in sim.verdict.codes else "")
        raise ValidationError("the simulated session against the candidate is not secure: "
                              + "; ".join(sim.verdict.reasons) + hint)
    if policy.expect_local == "accept" and sim.verdict.local_ok is False:
        live = driver.validate(shell, facts, unchanged(facts), host, policy)
        if live.verdict.local_ok is not False:
            refused = "; ".join(f.detail for f in sim.verdict.findings)
            raise ValidationError(f"the candidate would break inbound mail that the live configuration accepts "
                                  f"(a regression): {refused}")
        sim = replace(sim, transcript=f"{sim.transcript}; {NOT_AN_MX}")
    return sim


# ---------------------------------------------------------------------- steps
def validate_candidate(ctx: HostContext, txn: Txn) -> None:
    """`prove` the candidate. When that fails and the probe port does not answer from here either (a frozen MTA
    fails both), the port is what the report leads with (`baseline`)."""
    assert txn.facts is not None and txn.cand is not None
    try:
        sim = prove(ctx.shell, ctx.driver, txn.facts, txn.cand, ctx.host, ctx.policy)
    except ValidationError:
        baseline(ctx, txn)
        raise
    txn.result = replace(txn.result, simulation=sim.transcript)


def baseline(ctx: HostContext, txn: Txn) -> None:
    """The outside probe of the live configuration has finished: nothing may be written while it runs. A probe
    port that did not greet from here refuses the change, which could not be verified from outside (the host
    `unreachable` when not even a TCP connection was made, `inconclusive` when one was): nothing is written."""
    if txn.before is not None:
        txn.before()
    probed = txn.probed
    if probed is not None and not answering(probed):
        txn.result = replace(txn.result, status=Status.INCONCLUSIVE if probed.connected else Status.UNREACHABLE)
        raise ValidationError(f"port {ctx.host.probe_port} does not answer from here ("
                              f"{'; '.join(probed.errors) or 'no SMTP banner'}): the change could not be verified "
                              "from outside, so nothing was written")


def back_up(ctx: HostContext, txn: Txn) -> None:
    assert txn.facts is not None and txn.cand is not None
    items = ctx.driver.backup_set(txn.facts, txn.cand)
    txn.manifest = ctx.store.save(ctx.shell, ctx.run_id, ctx.driver.playbook.label, items)
    txn.result = replace(txn.result, backup_id=ctx.run_id)
    ctx.log.info("backup_saved", files=[i.path for i in items])


def write(ctx: HostContext, txn: Txn) -> None:
    """Write each changed file atomically; the sha256 read back on the host must be the candidate's."""
    assert txn.facts is not None and txn.cand is not None
    files = ctx.driver.playbook.files
    for name in txn.cand.changed:
        st = txn.facts.stats[name]
        data = txn.cand.data(name)
        digest = ctx.shell.write_atomic(files[name], data, mode=st.mode, uid=st.uid, gid=st.gid,
                                        backdate=ctx.driver.playbook.backdate_writes)
        if digest != sha256(data):
            raise ValidationError(f"{files[name]} reads back as sha256 {digest[:12] or 'nothing'}..., not the "
                                  f"validated candidate's {sha256(data)[:12]}...")
    txn.confirmed = True


def check(ctx: HostContext, txn: Txn) -> None:
    ctx.driver.check_live(ctx.shell, validated=txn.confirmed)


def activate(ctx: HostContext, txn: Txn) -> None:
    escalated = bring_up(ctx.shell, ctx.driver, ctx.host, ctx.log)
    txn.result = replace(txn.result, notes=(*txn.result.notes, *escalated))


def bring_up(shell: Shell, driver: Driver, host: Host, log: Any) -> tuple[str, ...]:
    """Activate, then wait for the SMTP banner (the playbook's `restart.answer_timeout`, seconds). When the
    activation hangs (past `restart.command_timeout`) or no banner comes, escalate to the driver's restart
    (stop; kill through the pid file; start) and wait again. Returns notes on what was escalated and why
    (empty when the MTA answered at once). A port this machine cannot connect to at all (filtered, a cut
    link) is noted, not escalated: verification decides. Raises CommandError when the MTA refuses the
    activation (the configuration), TransportError when it does not answer even after the restart, or
    cannot be restarted."""
    spec = driver.playbook.restart
    started = time.monotonic()
    try:
        driver.activate(shell)
        silence = await_banner(host, spec.answer_timeout)
        if silence is None:
            return ()
        if silence.filtered:   # a firewall or the network, not the MTA: a restart would change nothing
            log.warning("smtp_unreachable", reason=silence.why)
            return (f"no SMTP banner after activation, but no connection either ({silence.why}): the MTA was "
                    "not restarted",)
        reason = f"no SMTP banner after activation ({silence.why})"
    except CommandTimeout as exc:
        reason = f"no SMTP banner after activation (the activation hung: {exc})"
    log.warning("mta_not_answering", reason=reason, seconds=round(time.monotonic() - started, 1))
    missed = time.monotonic()
    try:
        done = driver.restart(shell)
    except DriverError as exc:
        raise TransportError(f"{host.name}: {reason}, and {exc}") from exc
    still = await_banner(host, spec.answer_timeout)
    took = time.monotonic() - missed
    if still is not None:
        raise TransportError(f"{host.name}: {reason}; restarted ({'; '.join(done)}) and still no banner: "
                             f"{still.why}")
    log.warning("mta_restarted", reason=reason, steps=list(done), seconds=round(took, 1))
    return (f"escalated to a restart: {reason}; {'; '.join(done)}; SMTP answered {took:.0f}s after the "
            "missed banner",)


def verify(ctx: HostContext, txn: Txn) -> None:
    """The outside probe after activation: secure, and inbound mail still accepted if it was before."""
    txn.verdict, result = probe_until_secure(ctx.host, ctx.driver.probe_context(ctx.host, txn.facts),
                                             ctx.policy.expect_local)
    txn.proof = proof(result, ctx.policy.expect_local)
    if txn.verdict.status is not Status.SECURE:
        raise ValidationError("verification probe after reload: " + "; ".join(txn.verdict.reasons))
    if ctx.policy.expect_local == "accept" and txn.verdict.local_ok is False:
        if txn.inbound_before is not False:
            raise ValidationError("verification probe after reload: inbound mail accepted before the change is "
                                  "refused now: " + "; ".join(f.detail for f in txn.verdict.findings))
        txn.result = replace(txn.result, notes=(*txn.result.notes, NOT_AN_MX))


def answers(ctx: HostContext, txn: Txn) -> None:
    txn.verdict, result = outside_probe(ctx.host, ctx.driver.probe_context(ctx.host, None), ctx.policy.expect_local)
    if not answering(result):
        raise TransportError(f"{ctx.host.name}: restored, but SMTP does not answer after reload: "
                             + "; ".join(result.errors))


def reinstate(shell: Shell, driver: Driver, host: Host, records: dict[FileRecord, bytes],
              log: Any) -> tuple[str, ...]:
    """Put a backup back: restore every resource, activate (`bring_up`: which may regenerate derived files,
    and restarts an MTA that stops greeting), then restore again whatever activation rewrote, so the host
    ends byte-identical (bytes, mode, owner, mtime). Returns the escalation notes. The MTA refusing the
    activation is not an error here: the restored configuration is what it last ran. TransportError when
    the MTA does not answer even after a restart (the files are restored all the same)."""
    restore(shell, records)
    try:
        return bring_up(shell, driver, host, log)
    except CommandError:
        return ()
    finally:
        restore(shell, records)


def resettle(ctx: HostContext, txn: Txn) -> None:
    """After a rollback's activation: restore again what it regenerated (derived files)."""
    restore(ctx.shell, txn.records)


def roll_back(ctx: HostContext, txn: Txn, reason: str) -> HostResult:
    """The backup's undo: reinstate every backed-up resource, re-probe → `rolled_back`."""
    try:
        if not txn.records:
            assert txn.manifest is not None
            txn.records = ctx.store.contents(ctx.shell, txn.manifest)
        escalated = reinstate(ctx.shell, ctx.driver, ctx.host, txn.records, ctx.log)
        verdict, result = outside_probe(ctx.host, ctx.driver.probe_context(ctx.host, None), ctx.policy.expect_local)
    except RemediateError as exc:
        ctx.log.critical("rollback_failed", error=str(exc))
        ctx.journal.record(ctx.host.name, Phase.FAILED, reason=f"rollback failed: {exc}")
        return replace(txn.result, error=f"{reason}; AND ROLLBACK FAILED: {exc}. Run `remediate rollback --run "
                                         f"{ctx.run_id} --limit {ctx.host.name}` once the host is reachable")
    ctx.journal.record(ctx.host.name, Phase.ROLLED_BACK, reason=reason)
    ctx.journal.record(ctx.host.name, Phase.DONE)
    ctx.log.warning("rolled_back", reason=reason)
    note = "MTA answering after restore" if answering(result) else "MTA NOT answering after restore"
    return replace(txn.result, status=Status.ROLLED_BACK, error=reason, findings_after=verdict.findings,
                   notes=(*txn.result.notes, *escalated, note))


#: activation then verification, shared by apply and resume
TAIL = (Step(Phase.VALIDATED, check), Step(Phase.RELOADED, activate), Step(Phase.VERIFIED, verify))
APPLY = (Step(None, validate_candidate), Step(None, baseline),
         Step(Phase.BACKED_UP, back_up, roll_back, "backup failed, nothing written: "),
         Step(Phase.WRITTEN, write), *TAIL)
ROLLBACK = (Step(Phase.VALIDATED, check), Step(Phase.RELOADED, activate), Step(None, resettle),
            Step(Phase.RESTORED, answers))
