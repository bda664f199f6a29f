"""Per-host state machines for scan, plan, apply and rollback, and the fleet scheduler that runs them.

apply, per host:
    connect → read → transform (pure) → [unchanged: stop, touch nothing]
    → lock → validate candidate (private copy + simulated session) → back up (local, then host)
    → write atomically → check → reload → probe from outside → verified
      └─ any failure after the backup → restore byte-identical files, reload, re-probe → rolled_back
Each phase is journalled (fsynced) before the next begins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from remediate import engine
from remediate.backup import BackupStore
from remediate.errors import BackupError, RemediateError, TransportError, ValidationError
from remediate.journal import Journal
from remediate.playbook import Playbook, playbook_for
from remediate.results import Finding, HostResult, Status
from remediate.transport import Connection

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
    #: apply --plan: the approved plan's host entries by name (only these hosts, only as planned)
    planned: dict[str, dict[str, Any]] | None = None
    canary: int = 0                      # hosts in the first wave, alone; the rest only if all succeed
    max_failures: int | None = None      # no new host starts once this many failed
    stop: threading.Event = field(default_factory=threading.Event)


# ---------------------------------------------------------------------- fleet
FAILURES = frozenset({Status.FAILED, Status.ROLLED_BACK, Status.UNREACHABLE})


def run_fleet(hosts: Iterable[Any], work: Callable[[Any], HostResult], forks: int,
              stop: threading.Event, on_done: Callable[[HostResult], None] | None = None, *,
              canary: int = 0, max_failures: int | None = None) -> list[HostResult]:
    """Run `work` on each host, `forks` at a time, keeping inventory order in the result.

    Waves: the first `canary` hosts run alone first; if any of them fails the rest never start. The
    failure budget: once `max_failures` hosts have failed, rolled back or been unreachable, no new host
    starts. Nor after `stop` is set (SIGINT/SIGTERM). Hosts that never started are `skipped`, with why;
    hosts in flight always finish their own state machine (which completes or rolls back)."""
    hosts = list(hosts)
    results: dict[str, HostResult] = {}
    failures: list[str] = []
    why = ["run interrupted"]
    lock = threading.Lock()

    def halt(reason: str) -> None:
        with lock:
            if not stop.is_set():
                why[0] = reason
                log.warning("fleet_halted", reason=reason)
            stop.set()

    def guarded(host: Any) -> HostResult:
        if stop.is_set():
            result = HostResult(host.name, host.address, Status.SKIPPED, error=f"not started: {why[0]}")
        else:
            try:
                result = work(host)
            except Exception as exc:  # a bug must cost one host, never the fleet
                log.exception("host_crashed", host=host.name)
                result = HostResult(host.name, host.address, Status.FAILED, error=f"internal error: {exc!r}")
            if result.status in FAILURES:
                with lock:
                    failures.append(host.name)
                    count = len(failures)
                if max_failures is not None and count >= max_failures:
                    halt(f"failure budget spent ({count} host(s) failed: {', '.join(failures)})")
        log.info("host_done", host=host.name, status=result.status.value, changed=result.changed,
                 error=result.error)
        if on_done is not None:
            on_done(result)
        return result

    waves = [hosts[:canary], hosts[canary:]] if canary > 0 else [hosts]
    with ThreadPoolExecutor(max_workers=max(1, forks)) as pool:
        for i, wave in enumerate(waves):
            for host, result in zip(wave, pool.map(guarded, wave), strict=True):
                results[host.name] = result
            if i == 0 and canary > 0 and any(results[h.name].status in FAILURES for h in wave):
                halt(f"canary wave failed ({', '.join(h.name for h in wave if results[h.name].status in FAILURES)})")
    return [results[h.name] for h in hosts]


def _playbook(host: Any, settings: Settings) -> Playbook:
    return playbook_for(host.mta, settings.playbooks)


def _prepare(host: Any, settings: Settings, run_id: str, **bind: Any) -> tuple[Any, Playbook, Any, HostResult]:
    """What every changing state machine starts with: its bound logger, the host's playbook and policy,
    and the result it returns unless it gets further (`failed`)."""
    playbook = _playbook(host, settings)
    return (log.bind(run_id=run_id, host=host.name, **bind), playbook, playbook.policies[host.policy],
            HostResult(host.name, host.address, Status.FAILED))


def _connect(host: Any) -> Connection | HostResult:
    """A connected Connection, or the `unreachable` result that says why."""
    conn = Connection(host)
    try:
        conn.connect()
    except TransportError as exc:
        log.warning("unreachable", host=host.name, error=str(exc))
        return HostResult(host.name, host.address, Status.UNREACHABLE, error=str(exc))
    return conn


# ---------------------------------------------------------------------- scan
def scan_host(host: Any, settings: Settings) -> HostResult:
    """Probe from outside; where SSH works, read the effective config to explain each finding."""
    playbook = _playbook(host, settings)
    policy = playbook.policies[host.policy]
    facts: engine.Facts | None = None
    notes: list[str] = []
    explained: tuple[Finding, ...] = ()
    try:
        with Connection(host) as conn:
            facts = engine.gather(conn, playbook)
            explained = engine.audit(playbook, {n: facts.text(n) for n in playbook.files}, host)
    except RemediateError as exc:
        notes.append(f"configuration not read over SSH ({exc}); verdict from the probe alone")
    verdict, result = engine.outside_probe(host, facts, policy.expect_local)
    if result.banner is None and not result.relay_attempts:
        return HostResult(host.name, host.address, Status.UNREACHABLE, error="; ".join(result.errors) or
                          "no SMTP answer", notes=tuple(notes))
    status = Status(verdict.status)
    findings = engine.verdict_findings(verdict) + (explained if status is Status.VULNERABLE else ())
    notes += [r for r in verdict.reasons if status is not Status.VULNERABLE]
    notes += [f.detail for f in explained if status is not Status.VULNERABLE]
    return HostResult(host.name, host.address, status, findings_before=findings, notes=tuple(notes))


# ---------------------------------------------------------------------- plan
def plan_host(host: Any, settings: Settings) -> HostResult:
    """Read, transform, validate the candidate on the host (private copy), simulate; change nothing."""
    playbook = _playbook(host, settings)
    policy = playbook.policies[host.policy]
    try:
        with Connection(host) as conn:
            facts = engine.gather(conn, playbook)
            cand = engine.candidate(facts, playbook, policy, host)
            before = engine.audit(playbook, {n: facts.text(n) for n in playbook.files}, host)
            after = engine.audit(playbook, cand.texts, host)
            try:
                sim = engine.validate_candidate(conn, playbook, facts, cand, host, policy)
            except ValidationError as exc:
                return HostResult(host.name, host.address, Status.FAILED, before, after, bool(cand.changed),
                                  diff=cand.diff or None, error=str(exc))
    except TransportError as exc:
        return HostResult(host.name, host.address, Status.UNREACHABLE, error=str(exc))
    except RemediateError as exc:
        return HostResult(host.name, host.address, Status.FAILED, error=str(exc))
    if sim.verdict.status != "secure":
        return HostResult(host.name, host.address, Status.FAILED, before, after, bool(cand.changed),
                          diff=cand.diff or None, simulation=sim.transcript,
                          error="the simulated session against the candidate is not secure: "
                                + "; ".join(sim.verdict.reasons))
    status = Status.WOULD_CHANGE if cand.changed else Status.COMPLIANT
    pre, post = engine.images(playbook, facts, cand)
    return HostResult(host.name, host.address, status, before, after, bool(cand.changed),
                      diff=cand.diff or None, simulation=sim.transcript, pre_images=pre, post_images=post)


# ---------------------------------------------------------------------- apply
def apply_host(host: Any, settings: Settings, journal: Journal) -> HostResult:
    """The transactional state machine for one host (see the module docstring)."""
    hlog, playbook, policy, base = _prepare(host, settings, settings.run_id)
    conn = _connect(host)
    if isinstance(conn, HostResult):
        return conn
    with conn:
        try:
            facts = engine.gather(conn, playbook)
            cand = engine.candidate(facts, playbook, policy, host)
        except RemediateError as exc:
            return replace(base, error=str(exc))
        before_v, _ = engine.outside_probe(host, facts, policy.expect_local)
        before = engine.verdict_findings(before_v) + engine.audit(
            playbook, {n: facts.text(n) for n in playbook.files}, host)
        base = replace(base, findings_before=before, diff=cand.diff or None)
        if settings.planned is not None:
            try:
                engine.check_against_plan(playbook, facts, cand, settings.planned[host.name])
            except ValidationError as exc:
                return replace(base, error=str(exc))
        if not cand.changed:
            hlog.info("unchanged")
            if before_v.status == "vulnerable":
                return replace(base, error="still vulnerable and the playbook has no change for it: "
                               + "; ".join(before_v.reasons), findings_after=before)
            return replace(base, status=Status.UNCHANGED, notes=tuple(before_v.reasons))
        try:
            engine.acquire_lock(conn, settings.run_id, break_lock=settings.break_lock, log=hlog)
        except RemediateError as exc:
            return replace(base, error=str(exc))
        try:
            journal.record(host.name, "locked")
            return _transaction(conn, host, settings, journal, playbook, policy, facts, cand, base, hlog)
        finally:
            try:
                engine.release_lock(conn, settings.run_id)
            except RemediateError as exc:
                hlog.warning("lock_not_released", error=str(exc))


def _transaction(conn: Connection, host: Any, settings: Settings, journal: Journal, playbook: Playbook,
                 policy: Any, facts: engine.Facts, cand: engine.Candidate, base: HostResult,
                 hlog: Any) -> HostResult:
    try:
        sim = engine.validate_candidate(conn, playbook, facts, cand, host, policy)
        if sim.verdict.status != "secure":
            raise ValidationError("the simulated session against the candidate is not secure: "
                                  + "; ".join(sim.verdict.reasons))
    except RemediateError as exc:
        hlog.warning("candidate_refused", error=str(exc))
        journal.record(host.name, "failed", reason=str(exc))
        return replace(base, error=str(exc))
    files = {playbook.files[n]: (facts.raw[n], facts.stats[n]) for n in cand.changed}
    try:
        manifest = store(settings).save(conn, settings.run_id, f"{playbook.mta}@{playbook.version}", files)
    except RemediateError as exc:
        journal.record(host.name, "failed", reason=str(exc))
        return replace(base, error=f"backup failed, nothing written: {exc}")
    journal.record(host.name, "backed_up", files=sorted(files))
    hlog.info("backup_saved", files=sorted(files))
    base = replace(base, backup_id=settings.run_id, simulation=sim.transcript)
    try:
        for name in cand.changed:
            st = facts.stats[name]
            conn.write_atomic(playbook.files[name], cand.data(name), mode=st.mode, uid=st.uid, gid=st.gid)
        journal.record(host.name, "written")
        conn.run(list(playbook.check_live))
        journal.record(host.name, "validated")
        conn.run(list(playbook.reload))
        journal.record(host.name, "reloaded")
        verdict = engine.probe_until(host, facts, policy.expect_local)
        if verdict.status != "secure":
            raise ValidationError("verification probe after reload: " + "; ".join(verdict.reasons))
    except RemediateError as exc:
        hlog.error("apply_failed", error=str(exc))
        return _roll_back(conn, host, settings, journal, playbook, policy, manifest, base, str(exc), hlog)
    journal.record(host.name, "verified")
    journal.record(host.name, "done")
    hlog.info("verified")
    return replace(base, status=Status.CHANGED, changed=True, findings_after=engine.verdict_findings(verdict))


def _roll_back(conn: Connection, host: Any, settings: Settings, journal: Journal, playbook: Playbook,
               policy: Any, manifest: Any, base: HostResult, reason: str, hlog: Any) -> HostResult:
    try:
        records = {rec: store(settings).content(conn, manifest, rec) for rec in manifest.files}
        engine.restore_files(conn, records)
        conn.run(list(playbook.reload), check=False)
        verdict, result = engine.outside_probe(host, None, policy.expect_local)
    except RemediateError as exc:
        hlog.critical("rollback_failed", error=str(exc))
        journal.record(host.name, "failed", reason=f"rollback failed: {exc}")
        return replace(base, error=f"{reason}; AND ROLLBACK FAILED: {exc}. Run `remediate rollback --run "
                                   f"{settings.run_id} --limit {host.name}` once the host is reachable")
    journal.record(host.name, "rolled_back", reason=reason)
    journal.record(host.name, "done")
    hlog.warning("rolled_back", reason=reason)
    answering = result.banner is not None
    return replace(base, status=Status.ROLLED_BACK, error=reason,
                   findings_after=engine.verdict_findings(verdict),
                   notes=(("MTA answering after restore" if answering else "MTA NOT answering after restore"),))


def store(settings: Settings) -> BackupStore:
    return BackupStore(settings.backups)


# ---------------------------------------------------------------------- rollback
def latest_run_for(conn: Connection, settings: Settings) -> str | None:
    """The newest run with a backup of this host, locally or on the host."""
    local = [run for _, run in store(settings).runs(conn.name)]
    remote = conn.run(["ls", "-1", store(settings).remote_root], check=False).out.split()
    runs = sorted(set(local) | {r for r in remote if r[:8].isdigit()})
    return runs[-1] if runs else None


def rollback_host(host: Any, settings: Settings, run_id: str | None, journal: Journal) -> HostResult:
    """Restore the backup of `run_id` (newest by default): verify every copy first, then write."""
    hlog, playbook, policy, base = _prepare(host, settings, settings.run_id)
    conn = _connect(host)
    if isinstance(conn, HostResult):
        return conn
    with conn:
        try:
            target = run_id or latest_run_for(conn, settings)
            if target is None:
                return replace(base, status=Status.SKIPPED, error=None, notes=("no backup of this host",))
            try:
                manifest = store(settings).manifest(conn, target)
            except BackupError as exc:
                if run_id is not None and "no backup of run" in str(exc):
                    cleared = engine.clear_dead_lock(conn, target, hlog)
                    return replace(base, status=Status.SKIPPED, backup_id=target,
                                   notes=(f"run {target} did not change this host"
                                          + ("; removed the lock it left behind" if cleared else ""),))
                raise
            warnings: list[str] = []
            records = {rec: store(settings).content(conn, manifest, rec, warnings) for rec in manifest.files}
            for warning in warnings:
                hlog.warning("backup_copy_refused", detail=warning)
            base = replace(base, notes=tuple(warnings))
            engine.acquire_lock(conn, settings.run_id, break_lock=settings.break_lock,
                                adopt=frozenset({target}), log=hlog)
            try:
                journal.record(host.name, "locked", restoring=target)
                written = engine.restore_files(conn, records)
                if not written:
                    journal.record(host.name, "done")
                    return replace(base, status=Status.SKIPPED, backup_id=target,
                                   notes=base.notes + (f"files already identical to the backup of run {target}",))
                journal.record(host.name, "written", files=written)
                conn.run(list(playbook.check_live))
                conn.run(list(playbook.reload))
                journal.record(host.name, "reloaded")
                verdict, result = engine.outside_probe(host, None, policy.expect_local)
                if result.banner is None or result.banner.klass != 2:
                    raise TransportError(f"{host.name}: restored, but SMTP does not answer after reload: "
                                         + "; ".join(result.errors))
                journal.record(host.name, "restored", files=written)
                journal.record(host.name, "done")
                hlog.info("restored", run=target, files=written)
                return replace(base, status=Status.RESTORED, changed=True, backup_id=target,
                               findings_after=engine.verdict_findings(verdict),
                               notes=base.notes + tuple([f"restored {', '.join(written)} from run {target}"]
                                           + (["the host is vulnerable again, as it was before that run"]
                                              if verdict.status == "vulnerable" else [])))
            finally:
                engine.release_lock(conn, settings.run_id)
        except TransportError as exc:
            return replace(base, status=Status.UNREACHABLE, error=str(exc))
        except RemediateError as exc:
            hlog.error("rollback_failed", error=str(exc))
            return replace(base, error=str(exc))


# ---------------------------------------------------------------------- resume
def resume_host(host: Any, settings: Settings, run_id: str, phase: str | None, journal: Journal) -> HostResult:
    """Finish or roll back one host of the interrupted run `run_id` from its last recorded phase.

    Nothing written yet (started/locked/failed): release the dead run's lock, done. Otherwise the
    candidate is recomputed from the backed-up originals: if every file already holds it, the run is
    finished (check, reload, verify from outside); if not (a write was cut short), the host is restored."""
    hlog, playbook, policy, base = _prepare(host, settings, run_id, resume=True)
    base = replace(base, backup_id=run_id)
    if phase in (None, "done"):
        return replace(base, status=Status.SKIPPED, notes=(f"nothing to resume (last phase: {phase or 'none'})",))
    conn = _connect(host)
    if isinstance(conn, HostResult):
        return conn
    with conn:
        try:
            engine.acquire_lock(conn, run_id, adopt=frozenset({run_id}), log=hlog)
        except RemediateError as exc:
            return replace(base, error=str(exc))
        try:
            if phase in ("started", "locked", "failed"):
                journal.record(host.name, "done", resumed_from=phase)
                return replace(base, status=Status.UNCHANGED, backup_id=None,
                               notes=(f"interrupted at {phase}: nothing had been written",))
            manifest = store(settings).manifest(conn, run_id)
            originals = {rec.path: store(settings).content(conn, manifest, rec) for rec in manifest.files}
            raw, stats = {}, {}
            for name, path in playbook.files.items():
                raw[name] = originals[path] if path in originals else conn.read_file(path)
                stats[name] = conn.stat(path)
            cand = engine.candidate(engine.Facts(raw, stats, {}), playbook, policy, host)
            base = replace(base, diff=cand.diff or None)
            if any(conn.read_file(playbook.files[n]) != cand.data(n) for n in playbook.files):
                return _roll_back(conn, host, settings, journal, playbook, policy, manifest, base,
                                  f"interrupted at {phase} before every file was written", hlog)
            try:
                conn.run(list(playbook.check_live))
                conn.run(list(playbook.reload))
                journal.record(host.name, "reloaded", resumed_from=phase)
                facts = engine.gather(conn, playbook)
                verdict = engine.probe_until(host, facts, policy.expect_local)
                if verdict.status != "secure":
                    raise ValidationError("verification probe after reload: " + "; ".join(verdict.reasons))
            except RemediateError as exc:
                return _roll_back(conn, host, settings, journal, playbook, policy, manifest, base, str(exc), hlog)
            journal.record(host.name, "verified")
            journal.record(host.name, "done")
            return replace(base, status=Status.CHANGED, changed=True,
                           notes=(f"finished from phase {phase}",), findings_after=engine.verdict_findings(verdict))
        except RemediateError as exc:
            return replace(base, error=str(exc))
        finally:
            engine.release_lock(conn, run_id)
