"""The steps one host goes through, each a small function over a Connection and a Playbook.

Reading (facts), deciding (candidate), proving (validate_candidate: a private copy of the config plus a
simulated SMTP session against it), locking, restoring, and probing from outside. The orchestrator
strings these together into per-command state machines; nothing here loops over hosts.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from remediate import probe as smtp_probe
from remediate.backup import FileRecord, sha256
from remediate.errors import CommandError, LockError, ValidationError
from remediate.playbook import Playbook, Policy, fill, resolve_args
from remediate.results import Finding
from remediate.transforms import audit as postfix_audit
from remediate.transport import Connection, FileStat

LOCK_PATH = "/var/lib/remediate/lock.json"
HELO = "probe.remediate.example"
#: explains findings from configuration text, per MTA
AUDITS = {"postfix": postfix_audit}


@dataclass(frozen=True, slots=True)
class Facts:
    raw: dict[str, bytes]            # playbook file name -> content
    stats: dict[str, FileStat]
    outputs: dict[str, str]          # fact name -> command output

    def text(self, name: str) -> str:
        return self.raw[name].decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class Candidate:
    texts: dict[str, str]
    changed: tuple[str, ...]         # playbook file names whose text differs
    diff: str

    def data(self, name: str) -> bytes:
        return self.texts[name].encode("utf-8", "surrogateescape")


def images(playbook: Playbook, facts: Facts, cand: Candidate) -> tuple[tuple[tuple[str, str], ...], ...]:
    """(pre, post): sha256 per file path as read now and as the candidate would write it."""
    pre = tuple((playbook.files[n], sha256(facts.raw[n])) for n in playbook.files)
    post = tuple((playbook.files[n], sha256(cand.data(n))) for n in playbook.files)
    return pre, post


def check_against_plan(playbook: Playbook, facts: Facts, cand: Candidate, planned: dict[str, Any]) -> None:
    """Refuse (ValidationError) when the host or the candidate is not what the approved plan showed."""
    pre, post = images(playbook, facts, cand)
    for path, digest in pre:
        if planned.get("pre_images", {}).get(path) != digest:
            raise ValidationError(f"stale plan: {path} changed on the host since the plan was made; run "
                                  "`remediate plan` again and have it approved")
    if dict(post) != planned.get("post_images"):
        raise ValidationError("the change computed now differs from the approved plan (playbook, policy or "
                              "inventory changed since); run `remediate plan` again")


@dataclass(frozen=True, slots=True)
class Simulation:
    verdict: smtp_probe.Verdict
    transcript: str


# ---------------------------------------------------------------------- read
def gather(conn: Connection, playbook: Playbook) -> Facts:
    """Read every playbook file (content and stat) and run the read-only fact commands."""
    raw, stats = {}, {}
    for name, path in playbook.files.items():
        raw[name] = conn.read_file(path)
        stats[name] = conn.stat(path)
    outputs = {name: conn.run(list(argv)).out.strip() for name, argv in playbook.facts.items()}
    return Facts(raw, stats, outputs)


def candidate(facts: Facts, playbook: Playbook, policy: Policy, host: Any) -> Candidate:
    """Apply the policy's transforms in order (pure); the diff is computed here, on the controller."""
    texts = {name: facts.text(name) for name in playbook.files}
    for step in policy.steps:
        texts[step.file] = step.fn(texts[step.file], **resolve_args(step.args, host, texts))
    changed = tuple(n for n in playbook.files if texts[n] != facts.text(n))
    diff = "".join(
        "".join(difflib.unified_diff(facts.text(n).splitlines(keepends=True),
                                     texts[n].splitlines(keepends=True),
                                     fromfile=f"a{playbook.files[n]}", tofile=f"b{playbook.files[n]}"))
        for n in changed)
    return Candidate(texts, changed, diff)


def audit(playbook: Playbook, texts: dict[str, str], host: Any) -> tuple[Finding, ...]:
    """Explain, from the configuration text, what causes each exposure (parameter and line)."""
    fn = AUDITS.get(playbook.mta)
    if fn is None:
        return ()
    found = fn(**{k: texts[k] for k in playbook.files}, trusted_networks=list(host.trusted_networks),
               policy=host.policy)
    return tuple(Finding(f.code, f"{os.path.basename(f.file)}:{f.line or '?'}: {f.parameter}: {f.detail}",
                         "config") for f in found)


def local_domain(host: Any, facts: Facts | None) -> str | None:
    if host.mail_domain:
        return str(host.mail_domain)
    if facts is not None and facts.outputs.get("myhostname"):
        return facts.outputs["myhostname"]
    return None


# ---------------------------------------------------------------------- probe
def outside_probe(host: Any, facts: Facts | None, expect_local: str,
                  timeout: float = 10.0) -> tuple[smtp_probe.Verdict, smtp_probe.ProbeResult]:
    """Probe the host's SMTP port from this machine and judge it with what SSH told us (if anything)."""
    result = smtp_probe.probe(host.address, host.probe_port, probe_domain=host.probe_domain,
                              local_domain=local_domain(host, facts), helo=HELO, timeout=timeout)
    defer = bool(facts and "defer_unauth_destination" in facts.outputs.get("relay_restrictions", ""))
    # Inside the networks the host is *meant* to trust, relay results prove nothing either way. Inside a
    # mynetworks wider than that, an accepted relay is exactly the finding.
    trusted = bool(result.source_address
                   and in_networks(result.source_address, " ".join(host.trusted_networks)))
    verdict = smtp_probe.judge(result, defer_configured=defer, orchestrator_trusted=trusted,
                               expect_local=expect_local)
    served = served_by(host.probe_domain, facts)
    if served:  # a relay "accepted" to a domain the host is meant to take mail for proves nothing
        findings = tuple(f for f in verdict.findings if f != "open_relay")
        status = smtp_probe.Status.VULNERABLE if findings else smtp_probe.Status.INCONCLUSIVE
        verdict = smtp_probe.Verdict(status, findings, verdict.reasons + (
            f"probe domain {host.probe_domain} is in the host's {served}, so relay tests to it prove nothing; "
            "set probe_domain to a domain this host does not serve",), verdict.local_ok)
    return verdict, result


def served_by(domain: str, facts: Facts | None) -> str | None:
    """Which of the host's domain lists (mydestination, relay_domains) covers `domain`, if any."""
    if facts is None:
        return None
    for name in ("relay_domains", "mydestination"):
        for item in facts.outputs.get(name, "").replace(",", " ").split():
            item = item.lower().lstrip(".")
            if ":" in item or "/" in item:   # a lookup table or file: not judged here
                continue
            if domain.lower() == item or domain.lower().endswith("." + item):
                return name
    return None


def in_networks(address: str, mynetworks: str) -> bool:
    """True when `address` falls inside any literal network of a Postfix mynetworks value."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for item in mynetworks.replace(",", " ").split():
        item = item.replace("[", "").replace("]", "")
        try:
            if ip in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue
    return False


_EVIDENCE = {"open_relay": "relay accepted", "anonymous_auth": "ANONYMOUS is advertised"}


def verdict_findings(verdict: smtp_probe.Verdict, source: str = "probe") -> tuple[Finding, ...]:
    """One Finding per code, its detail the probe's evidence for that code (not every reason)."""
    def evidence(code: str) -> str:
        hits = [r for r in verdict.reasons if _EVIDENCE.get(code, code) in r]
        return "; ".join(hits) or "; ".join(verdict.reasons) or code

    return tuple(Finding(code, evidence(code), source) for code in verdict.findings)


def probe_until(host: Any, facts: Facts | None, expect_local: str, attempts: int = 4,
                delay: float = 1.0) -> smtp_probe.Verdict:
    """Re-probe (read-only, so retrying is safe) until secure or attempts run out.

    A reload lets old smtpd processes finish at their convenience, so the first session after a
    reload may still meet the old configuration."""
    verdict, _ = outside_probe(host, facts, expect_local)
    for _ in range(attempts - 1):
        if verdict.status == "secure":
            break
        time.sleep(delay)
        verdict, _ = outside_probe(host, facts, expect_local)
    return verdict


# ---------------------------------------------------------------------- validate
def _warnings(text: str, directory: str, tmp: str) -> set[str]:
    lines = {ln.replace(tmp, "{dir}").replace(directory, "{dir}").strip() for ln in text.splitlines()}
    return {ln for ln in lines if "warning" in ln.lower() or "fatal" in ln.lower() or "error" in ln.lower()}


def validate_candidate(conn: Connection, playbook: Playbook, facts: Facts, cand: Candidate, host: Any,
                       policy: Policy) -> Simulation:
    """Prove the candidate in a private copy of the config directory; the live config is untouched.

    Runs the playbook's validate commands on the live directory and on the copy: a failing command or a
    warning only the copy produces is a ValidationError. Then runs a real smtpd session against the copy
    (simulate) that must refuse relay, not offer ANONYMOUS and treat the local recipient as the policy
    wants. The copy is removed in every case."""
    tmp = conn.run(["mktemp", "-d", "-t", "remediate-validate.XXXXXX"]).out.strip()
    try:
        conn.run(["cp", "-a", "--", playbook.config_dir + "/.", tmp])
        for name in playbook.files:
            rel = os.path.relpath(playbook.files[name], playbook.config_dir)
            st = facts.stats[name]
            conn.write_atomic(f"{tmp}/{rel}", cand.data(name), mode=st.mode, uid=st.uid, gid=st.gid)
        for argv in playbook.validate:
            live = conn.run(fill(argv, dir=playbook.config_dir), check=False)
            new = conn.run(fill(argv, dir=tmp), check=False)
            if new.rc != 0:
                raise ValidationError(f"{host.name}: `{' '.join(fill(argv, dir='<candidate>'))}` exited "
                                      f"{new.rc} on the candidate: {new.err.strip()[-400:]}")
            added = (_warnings(new.err + new.out, playbook.config_dir, tmp)
                     - _warnings(live.err + live.out, playbook.config_dir, tmp))
            if added:
                raise ValidationError(f"{host.name}: the candidate makes `{argv[0]}` warn: "
                                      + " | ".join(sorted(added))[:600])
        if playbook.simulate is None:
            return Simulation(smtp_probe.Verdict(smtp_probe.Status.SECURE, (), ("no simulation defined",), None), "")
        return simulate(conn, playbook, tmp, host, policy)
    finally:
        conn.run(["rm", "-rf", "--", tmp], check=False)


def simulate(conn: Connection, playbook: Playbook, directory: str, host: Any, policy: Policy) -> Simulation:
    """Run a real smtpd against `directory` over a pipe, from a simulated outside address."""
    sim = playbook.simulate
    assert sim is not None
    overrides = conn.run(["postconf", "-c", directory, "-P", sim.service], check=False).out
    argv = fill(sim.argv, dir=directory)
    for line in overrides.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            argv += ["-o", f"{name.rsplit('/', 1)[-1]}={value}"]
    restrictions = conn.run(["postconf", "-c", directory, "-h", "smtpd_relay_restrictions"], check=False).out
    mydest = conn.run(["postconf", "-c", directory, "-h", "myhostname"], check=False).out.strip()
    chan = conn.open_stream(argv)
    try:
        result = smtp_probe.simulate(chan, xclient_addr=sim.xclient_addr, probe_domain=host.probe_domain,
                                     local_domain=host.mail_domain or mydest, helo=HELO)
    finally:
        chan.close()
    verdict = smtp_probe.judge(result, defer_configured="defer_unauth_destination" in restrictions,
                               expect_local=policy.expect_local)
    return Simulation(verdict, describe(result, verdict))


def describe(result: smtp_probe.ProbeResult, verdict: smtp_probe.Verdict) -> str:
    """One short paragraph: what the simulated (or real) session saw and concluded."""
    refused = [a for a in result.relay_attempts if not a.accepted]
    parts = [f"verdict {verdict.status}"]
    if result.relay_attempts:
        parts.append(f"foreign RCPT refused {len(refused)}/{len(result.relay_attempts)}"
                     + (f" ({refused[0].rcpt_reply})" if refused and refused[0].rcpt_reply else ""))
    if result.local_attempt is not None:
        parts.append(f"local RCPT {result.local_attempt.rcpt_reply}")
    auth = sorted(set(result.ehlo_auth) | set(result.tls_auth or ()))
    parts.append("AUTH " + (" ".join(auth) if auth else "not offered"))
    if verdict.status != "secure":
        parts += list(verdict.reasons)
    return "; ".join(parts)


# ---------------------------------------------------------------------- lock
def acquire_lock(conn: Connection, run_id: str, *, break_lock: bool = False, max_age: float = 3600,
                 adopt: frozenset[str] = frozenset(), log: Any = None) -> None:
    """Take the host's lock atomically (O_EXCL). LockError names the holder when it is taken.

    A lock left by a dead run in `adopt` (the interrupted run being rolled back or resumed) is taken
    over; any other dead run's lock only with `break_lock` once older than `max_age`."""
    me = {"run_id": run_id, "orchestrator": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    if conn.create_exclusive(LOCK_PATH, json.dumps(me).encode()):
        return
    held = _held_lock(conn)
    age = time.time() - float(held.get("time", 0))
    live = held.get("orchestrator") == socket.gethostname() and _pid_alive(held.get("pid"))
    adoptable = held.get("run_id") in adopt and not live
    if adoptable or (break_lock and age > max_age and not live):
        if log is not None:
            log.warning("lock_adopted" if adoptable else "lock_broken", held_by=held.get("run_id"),
                        age_s=int(age))
        conn.run(["rm", "-f", "--", LOCK_PATH])
        if conn.create_exclusive(LOCK_PATH, json.dumps(me).encode()):
            return
    raise LockError(f"{conn.name}: locked by run {held.get('run_id', '?')} from {held.get('orchestrator', '?')} "
                    f"pid {held.get('pid', '?')}, {int(age)}s ago ({LOCK_PATH}); wait for it, or if that run "
                    f"is dead and the lock is older than {int(max_age)}s, use --break-lock")


def _held_lock(conn: Connection) -> dict[str, Any]:
    try:
        held = json.loads(conn.read_file(LOCK_PATH))
    except (ValueError, CommandError):
        return {}
    return held if isinstance(held, dict) else {}


def release_lock(conn: Connection, run_id: str) -> None:
    """Remove the lock if (and only if) it is ours."""
    if conn.exists(LOCK_PATH) and _held_lock(conn).get("run_id") == run_id:
        conn.run(["rm", "-f", "--", LOCK_PATH], check=False)


def clear_dead_lock(conn: Connection, run_id: str, log: Any = None) -> bool:
    """Remove a lock that the (dead) run `run_id` left behind; True if there was one."""
    if not conn.exists(LOCK_PATH):
        return False
    held = _held_lock(conn)
    live = held.get("orchestrator") == socket.gethostname() and _pid_alive(held.get("pid"))
    if held.get("run_id") != run_id or live:
        return False
    conn.run(["rm", "-f", "--", LOCK_PATH])
    if log is not None:
        log.warning("dead_lock_cleared", held_by=run_id)
    return True


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------- restore
def restore_files(conn: Connection, records: dict[FileRecord, bytes]) -> list[str]:
    """Write each backed-up file back atomically with its mode, owner and mtime; return paths restored.

    A file whose bytes already match gets only its metadata back; one that matches entirely is left alone."""
    written = []
    for rec, data in records.items():
        current = conn.read_file(rec.path) if conn.exists(rec.path) else None
        if current is not None and sha256(current) == rec.sha256:
            st = conn.stat(rec.path)
            if (st.mode, st.uid, st.gid, st.mtime_ns or st.mtime * 10**9) == \
                    (rec.mode, rec.uid, rec.gid, rec.mtime_ns or rec.mtime * 10**9):
                continue
            conn.run(["chown", f"{rec.uid}:{rec.gid}", "--", rec.path])  # same bytes, other metadata
            conn.run(["chmod", f"{rec.mode:o}", "--", rec.path])
        else:
            conn.write_atomic(rec.path, data, mode=rec.mode, uid=rec.uid, gid=rec.gid)
        sec, ns = divmod(rec.mtime_ns or rec.mtime * 10**9, 10**9)
        conn.run(["touch", "-m", "-d", f"@{sec}.{ns:09d}", "--", rec.path])
        written.append(rec.path)
    return written
