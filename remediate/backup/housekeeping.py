"""Housekeeping of the backup store (`remediate backups list|show|prune`): which runs exist, whether
each copy is intact, and which old runs may go.

`Backups.copies` reports, per file, whether each copy (local and on the host) is present and intact;
`plan_prune` (pure) decides which runs of a host go, keeping the newest and every run an unfinished run
still refers to; `Backups.prune` removes exactly those, on the host and locally, by paths built only from
validated run ids. Everything but `remove`/`prune`/`prune_host` only reads.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from remediate.backup.store import BackupStore, FileRecord, Manifest, sha256, valid_run_id
from remediate.errors import BackupError, CommandError, RemediateError, TransportError
from remediate.model import Host
from remediate.shell import Shell, open_shell

if TYPE_CHECKING:  # types only: the store never reads journals itself
    from remediate.journal import RunState

class CopyState(StrEnum):
    INTACT = "intact"
    CORRUPT = "corrupt"    # present, but its sha256 is not the manifest's
    MISSING = "missing"
    UNKNOWN = "unknown"    # could not be checked: host unreachable, copy unreadable


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of one backed-up file; `detail` says where and why when it is not intact."""

    state: CopyState
    detail: str = ""

    def describe(self) -> str:
        return f"{self.state.value} ({self.detail})" if self.detail else self.state.value


@dataclass(frozen=True, slots=True)
class CopyStatus:
    """Both copies of one file of a manifest."""

    record: FileRecord
    local: Copy
    host: Copy

    @property
    def ok(self) -> bool:
        return self.local.state is CopyState.INTACT and self.host.state is CopyState.INTACT


@dataclass(frozen=True, slots=True)
class Inspection:
    """What is known about one host's backup of one run. `manifest` is None when neither side has it."""

    host: str
    run_id: str
    manifest: Manifest | None
    source: str = ""                      # where the manifest came from: "local store" or "host"
    copies: tuple[CopyStatus, ...] = ()
    problems: tuple[str, ...] = ()        # anything wrong besides the copies themselves

    @property
    def ok(self) -> bool:
        """Every copy present and intact and nothing else wrong (a host without this run is ok)."""
        return not self.problems and all(c.ok for c in self.copies)


@dataclass(frozen=True, slots=True)
class PrunePlan:
    """Which runs of one host go. `kept`: the newest N, newest first; `held`: older runs an unfinished
    run still refers to; `remove`: every other run, oldest first."""

    host: str
    kept: tuple[str, ...]
    held: tuple[str, ...]
    remove: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What prune did on one host. `plan` is None when the host could not be asked (see `error`)."""

    host: str
    plan: PrunePlan | None
    removed: tuple[str, ...] = ()
    error: str | None = None


class Backups(BackupStore):
    """The backup store with its housekeeping: listing runs, checking both copies, pruning old runs."""

    def local_runs(self, host: str) -> list[str]:
        """Run ids with a folder for `host` in the local store (manifest or not), oldest first."""
        hdir = self.root / host
        if not hdir.is_dir():
            return []
        return sorted(p.name for p in hdir.iterdir() if p.is_dir() and valid_run_id(p.name))

    def remote_runs(self, shell: Shell) -> list[str]:
        """Run ids with an entry under the host's backup root, oldest first; [] when there is no root.
        Read-only; TransportError when the host cannot be asked."""
        return sorted(name for name in shell.listdir(shell.backup_root) if valid_run_id(name))

    def local_copy(self, host: str, run_id: str, rec: FileRecord) -> Copy:
        """The local copy of `rec`, judged against its sha256. Reads only."""
        path = self.local_dir(host, run_id) / "files" / rec.path.lstrip("/")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return Copy(CopyState.MISSING, str(path))
        except OSError as exc:
            return Copy(CopyState.UNKNOWN, f"{path} unreadable: {exc.strerror or exc}")
        return _judged(sha256(data), rec, str(path))

    def host_copy(self, shell: Shell, run_id: str, rec: FileRecord) -> Copy:
        """The host copy of `rec`, judged against its sha256 (hashed on the host). Reads only;
        TransportError when the connection fails."""
        path = f"{self.remote_dir(shell, run_id)}/files{rec.path}"
        try:
            return _judged(shell.sha256([path])[path], rec, f"{shell.name}:{path}")
        except CommandError as exc:
            if not shell.exists(path):
                return Copy(CopyState.MISSING, f"{shell.name}:{path}")
            return Copy(CopyState.UNKNOWN, f"{shell.name}:{path} unreadable: {exc.stderr.strip() or exc}")

    def copies(self, host: str, manifest: Manifest, conn: Shell | None = None,
               unknown: str = "not checked") -> list[CopyStatus]:
        """Both copies of every file of `manifest`, in manifest order. Reads only. Without `conn` the
        host copies are `unknown` (`unknown` says why); TransportError when the connection fails."""
        return [CopyStatus(rec, self.local_copy(host, manifest.run_id, rec),
                           self.host_copy(conn, manifest.run_id, rec) if conn is not None
                           else Copy(CopyState.UNKNOWN, unknown))
                for rec in manifest.files]

    def inspect(self, host: str, run_id: str, conn: Shell | None = None,
                unreachable: str = "") -> Inspection:
        """Everything known about `host`'s backup of `run_id`; reads only, on both sides.

        The local manifest is used when present, else the host's. A missing or unreadable manifest on
        either side, a host manifest that differs from the local one, a manifest naming another run or
        host, and (without `conn`) an unknown host side are recorded as problems, never raised.
        TransportError only when the connection fails mid-way."""
        problems: list[str] = []
        local = remote = None
        local_path = self.local_dir(host, run_id) / "manifest.json"
        remote_path = f"{self.remote_dir(conn, run_id)}/manifest.json" if conn is not None else "on the host"
        try:
            local = self.local_manifest(host, run_id)
        except BackupError as exc:
            problems.append(str(exc))
        if conn is not None:
            try:
                remote = self.remote_manifest(conn, run_id)
            except BackupError as exc:
                problems.append(str(exc))
        if local is not None and remote is not None and local != remote:
            problems.append(f"the host's manifest {remote_path} differs from the local one {local_path}")
        elif local is None and remote is not None and not problems:
            problems.append(f"no local manifest {local_path}")
        elif local is not None and remote is None and conn is not None and not problems:
            problems.append(f"no manifest on the host ({remote_path})")
        manifest = local or remote
        if manifest is None:
            if conn is None:
                problems.append(f"no local backup of this run, and the host could not be asked: {unreachable}")
            return Inspection(host, run_id, None, problems=tuple(problems))
        if (manifest.run_id, manifest.host) != (run_id, host):
            problems.append(f"the manifest names run {manifest.run_id} of host {manifest.host}")
        return Inspection(host, run_id, manifest, "local store" if local is not None else "host",
                          tuple(self.copies(host, manifest, conn, f"unreachable: {unreachable}")),
                          tuple(problems))

    def inspect_host(self, host: Host, run_id: str) -> Inspection:
        """`inspect` over a fresh connection to inventory host `host`; an unreachable host (or one lost
        mid-way) is inspected from the local store alone."""
        try:
            with open_shell(host) as shell:
                return self.inspect(host.name, run_id, shell)
        except TransportError as exc:
            return self.inspect(host.name, run_id, None, str(exc))

    def prune_plan(self, conn: Shell, keep: int, protected: Collection[str] = ()) -> PrunePlan:
        """`plan_prune` over the host's runs on both sides. Reads only."""
        return plan_prune(conn.name, [*self.local_runs(conn.name), *self.remote_runs(conn)], keep, protected)

    def remove(self, conn: Shell, run_id: str) -> None:
        """Delete run `run_id`'s backup of this host: its folder under the host's backup root, then
        ROOT/HOST/RUN_ID locally, nothing else. BackupError for an invalid run id (nothing touched); when
        the host copy cannot be removed (TransportError) the local copy stays."""
        if not valid_run_id(run_id):
            raise BackupError(f"refusing to remove {run_id!r}: not a run id")
        conn.remove(self.remote_dir(conn, run_id), recursive=True)
        local = self.local_dir(conn.name, run_id)
        if local.is_dir():
            shutil.rmtree(local)

    def prune(self, conn: Shell, plan: PrunePlan) -> PruneResult:
        """Remove `plan.remove`, oldest first; stops at the first failure, which `error` names."""
        assert plan.host == conn.name, (plan.host, conn.name)
        removed: list[str] = []
        for run_id in plan.remove:
            try:
                self.remove(conn, run_id)
            except (RemediateError, OSError) as exc:
                return PruneResult(conn.name, plan, tuple(removed), f"could not remove run {run_id}: {exc}")
            removed.append(run_id)
        return PruneResult(conn.name, plan, tuple(removed))

    def prune_host(self, host: Host, keep: int, protected: Collection[str] = (),
                   allowed: Collection[str] | None = None, dry_run: bool = False) -> PruneResult:
        """Plan (and unless `dry_run`, carry out) the prune of inventory host `host` over a fresh
        connection. With `allowed`, only runs in it are removed (what someone confirmed); the plan is
        made afresh, so a run that became protected or newest since is kept. Unreachable: error set,
        nothing removed."""
        try:
            with open_shell(host) as conn:
                plan = self.prune_plan(conn, keep, protected)
                if allowed is not None:
                    plan = replace(plan, remove=tuple(r for r in plan.remove if r in allowed))
                return PruneResult(host.name, plan) if dry_run else self.prune(conn, plan)
        except TransportError as exc:
            return PruneResult(host.name, None, error=f"unreachable, nothing removed: {exc}")


def _judged(digest: str, rec: FileRecord, where: str) -> Copy:
    if digest == rec.sha256:
        return Copy(CopyState.INTACT)
    return Copy(CopyState.CORRUPT, f"{where}: sha256 {digest[:12]}…, manifest says {rec.sha256[:12]}…")


def plan_prune(host: str, runs: Iterable[str], keep: int, protected: Collection[str] = ()) -> PrunePlan:
    """Keep the newest `keep` runs (run ids sort by time) and every protected one; remove the rest.

    Guarantees: the newest run is never removed; only valid run ids are ever removed (anything else
    found in a backup folder is left alone); duplicates count once. ValueError when keep < 1."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (the newest run is never removed), got {keep}")
    newest_first = sorted({r for r in runs if valid_run_id(r)}, reverse=True)
    older = newest_first[keep:][::-1]
    return PrunePlan(host, tuple(newest_first[:keep]), tuple(r for r in older if r in protected),
                     tuple(r for r in older if r not in protected))


def referenced_runs(states: Iterable[RunState]) -> frozenset[str]:
    """Runs prune must keep: every unfinished run (no `run_finished`: live or interrupted) and every
    run id such a run names in its per-host records (e.g. the run a rollback is restoring)."""
    held: set[str] = set()
    for state in states:
        if state.finished:
            continue
        held.add(state.run_id)
        for detail in state.details.values():
            held.update(v for v in detail.values() if isinstance(v, str) and valid_run_id(v))
    return frozenset(held)
