"""Typed results: one HostResult per host, rolled up into a RunResult that reports render."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    # scan
    SECURE = "secure"
    VULNERABLE = "vulnerable"
    INCONCLUSIVE = "inconclusive"
    # plan
    WOULD_CHANGE = "would_change"
    COMPLIANT = "compliant"
    # apply
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    ROLLED_BACK = "rolled_back"
    SKIPPED = "skipped"
    # rollback
    RESTORED = "restored"
    # any
    FAILED = "failed"
    UNREACHABLE = "unreachable"


#: statuses that mean "what was asked for succeeded" (exit 0 when every host has one of these)
OK_STATUSES = frozenset({Status.SECURE, Status.WOULD_CHANGE, Status.COMPLIANT, Status.CHANGED,
                         Status.UNCHANGED, Status.RESTORED})


@dataclass(frozen=True, slots=True)
class Finding:
    """Something wrong on a host: `code` (open_relay, anonymous_auth, ...) and why, in words."""

    code: str
    detail: str
    source: str = "probe"   # probe | config | simulation

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail, "source": self.source}


@dataclass(frozen=True, slots=True)
class HostResult:
    name: str
    address: str
    status: Status
    findings_before: tuple[Finding, ...] = ()
    findings_after: tuple[Finding, ...] = ()
    changed: bool = False
    backup_id: str | None = None
    diff: str | None = None
    error: str | None = None
    notes: tuple[str, ...] = ()
    simulation: str | None = None
    #: plan only: sha256 of each file as read, and as the candidate would write it ({path: sha256})
    pre_images: tuple[tuple[str, str], ...] = ()
    post_images: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name, "address": self.address, "status": self.status.value,
            "findings_before": [f.as_dict() for f in self.findings_before],
            "findings_after": [f.as_dict() for f in self.findings_after],
            "changed": self.changed, "backup_id": self.backup_id, "diff": self.diff,
            "error": self.error, "notes": list(self.notes), "simulation": self.simulation}
        if self.pre_images:
            out["pre_images"], out["post_images"] = dict(self.pre_images), dict(self.post_images)
        return out


@dataclass(slots=True)
class RunResult:
    run_id: str
    command: str
    started: float = field(default_factory=time.time)
    finished: float | None = None
    hosts: list[HostResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(h.status in OK_STATUSES for h in self.hosts)

    def as_dict(self) -> dict[str, object]:
        return {"run_id": self.run_id, "command": self.command, "started": _iso(self.started),
                "finished": _iso(self.finished) if self.finished else None,
                "hosts": [h.as_dict() for h in self.hosts]}


def new_run_id() -> str:
    """Sortable and unique: UTC timestamp plus random suffix, e.g. 20261128T204700Z-3f9a."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
