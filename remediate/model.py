"""The shared types: what a host is, what was found on it, where a run is, and what came of it.

Everything here is a frozen value (or an enum) and imports nothing of the project, so every room can
use it: `Host` (resolved once from the inventory), `Finding` (with its evidence), `Phase` (the steps a
changing run journals), `ProbeContext` (what a driver tells the probe about a host), `HostResult` /
`RunResult` (what reports render) and `Plan` (an approved dry run, validated when it is loaded).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

#: what a host's mail service must do (each driver's playbook defines both)
POLICIES = ("relay-auth", "auth-all")
#: what the `postmaster@` check expects under each policy when no driver's playbook says (a host scanned
#: from outside only): an MX accepts mail for its own domains; a submission-only server refuses it
POLICY_EXPECTS = {"relay-auth": "accept", "auth-all": "refuse"}
#: connection kinds a host may use (a Windows shell joins when the Exchange driver does)
CONNECTIONS = ("ssh",)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(*texts: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


DEFAULT_TRUSTED_NETWORKS = _networks("127.0.0.0/8", "::1/128")


class Status(StrEnum):
    """One status vocabulary for every command (README, "Reports")."""

    # scan (and the probe's own verdict)
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


class Phase(StrEnum):
    """Where a host is in a changing run; each is journalled (fsynced) before the next step begins."""

    STARTED = "started"
    LOCKED = "locked"
    BACKED_UP = "backed_up"
    WRITTEN = "written"
    VALIDATED = "validated"
    RELOADED = "reloaded"
    VERIFIED = "verified"
    ROLLED_BACK = "rolled_back"
    RESTORED = "restored"
    FAILED = "failed"
    DONE = "done"


#: phases after which nothing had been written to the host
UNWRITTEN = frozenset({Phase.STARTED, Phase.LOCKED, Phase.FAILED})


_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """`text` safe to print and to write as UTF-8: a byte of a configuration file that was not UTF-8 (read
    with surrogate escapes, so that it is written back unchanged) is shown as `\\xNN`, which says which
    byte it is; any other lone surrogate as `\\uNNNN`. Text without one is returned as it is."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda m: (f"\\x{ord(m.group()) - 0xDC00:02x}" if "\udc80" <= m.group() <= "\udcff"
                                     else f"\\u{ord(m.group()):04x}"), text)


@dataclass(frozen=True, slots=True)
class Finding:
    """Something wrong on a host and the evidence for it.

    `code` is `open_relay`, `anonymous_auth` (from the probe or a simulation) or a configuration code
    a driver defines (README, "Reports"); `detail` is the evidence in words; a configuration finding also
    names its `file`, `line` and `parameter`."""

    code: str
    detail: str
    source: str = "probe"   # probe | config | simulation
    file: str | None = None
    line: int | None = None
    parameter: str | None = None

    @property
    def text(self) -> str:
        """The finding as one line: `FILE:LINE: PARAMETER: detail` for a configuration finding (file by its
        base name)."""
        if self.file is None:
            return self.detail
        return f"{os.path.basename(self.file)}:{self.line or '?'}: {self.parameter}: {self.detail}"

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "detail": printable(self.text), "source": self.source}
        if self.file is not None:
            out |= {"file": self.file, "line": self.line, "parameter": self.parameter}
        return out


@dataclass(frozen=True, slots=True)
class SshConnection:
    """How to reach a host over SSH. Paths are expanded; secrets are never held (`password_env` names
    the environment variable that holds a key passphrase)."""

    port: int = 22
    user: str = "root"
    identity_file: str | None = None
    known_hosts: str = field(default_factory=lambda: os.path.expanduser("~/.ssh/known_hosts"))
    ssh_config: str | None = field(default_factory=lambda: os.path.expanduser("~/.ssh/config"))
    become: bool = False
    password_env: str | None = None
    connect_timeout: float = 10.0    # seconds
    command_timeout: float = 120.0   # seconds a remote command may take
    kind: str = "ssh"


@dataclass(frozen=True, slots=True)
class Host:
    """One mail server, fully resolved from the inventory (host > groups > defaults)."""

    name: str
    address: str
    connection: SshConnection = field(default_factory=SshConnection)
    mta: str = "auto"
    policy: str = "relay-auth"
    trusted_networks: tuple[Network, ...] = DEFAULT_TRUSTED_NETWORKS
    probe_domain: str = "relaytest.example.net"
    mail_domain: str | None = None
    probe_port: int = 25
    probe_timeout: float = 10.0   # seconds each read (and connect) of the outside probe may take
    groups: tuple[str, ...] = ()

    def trusts(self, address: str | None) -> bool:
        """True when `address` lies inside the networks this host is meant to trust."""
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in net for net in self.trusted_networks)


@dataclass(frozen=True, slots=True)
class SmtpService:
    """An SMTP listener of a host besides its probe port, as its driver read it: `name` (the MTA's own, e.g.
    `submission`), TCP `port`, `implicit_tls` (TLS from the first byte, RFC 8314 port 465) and `submission`
    (a port for mail clients, RFC 6409: unauthenticated clients should not get mail in at all)."""

    name: str
    port: int
    implicit_tls: bool = False
    submission: bool = True

    @property
    def label(self) -> str:
        return f"{self.name} (port {self.port})"


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What a driver read on the host that the outside probe needs to judge it.

    `local_domain`: a domain the host accepts mail for (the `postmaster@` check), if known;
    `deferral`: the setting that makes the host answer unauthorised relay with a 4xx deferral, if any
    (so a 4.7.1 counts as refused, and the verdict names the setting); `served`: (name of the MTA's list,
    literal domains in it), used to tell when the probe's "foreign" domain is one the host serves;
    `own_domains`: domains the host serves, which the probe forges a sender in (empty: `local_domain`);
    `services`: its other SMTP listeners, each probed with the same relay tests."""

    local_domain: str | None = None
    deferral: str | None = None
    served: tuple[tuple[str, tuple[str, ...]], ...] = ()
    own_domains: tuple[str, ...] = ()
    services: tuple[SmtpService, ...] = ()

    def serving(self, domain: str) -> str | None:
        """The name of the list that covers `domain` (itself or a parent), or None."""
        domain = domain.lower()
        for name, domains in self.served:
            for item in domains:
                item = item.lower().lstrip(".")
                if domain == item or domain.endswith("." + item):
                    return name
        return None


@dataclass(frozen=True, slots=True)
class HostPlan:
    """What `plan` saw and would do on one host, for approval (`remediate.planfile` writes and checks it).

    `host_key`: the SSH host key fingerprint seen (`SHA256:...`); `driver`/`playbook`: the driver's name and
    its playbook's `mta@version`; `driver_digest`: sha256 over the playbook file and the driver's code;
    `resources`: sha256 of every resource the driver read ({path: sha256}); `candidate`: sha256 of each
    file as the change would write it; `validate`/`activate`: the commands that will run, as shell text."""

    host_key: str | None
    driver: str
    playbook: str
    driver_digest: str
    resources: tuple[tuple[str, str], ...]
    candidate: tuple[tuple[str, str], ...]
    validate: tuple[str, ...] = ()
    activate: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"host_key": self.host_key,
                "driver": {"name": self.driver, "playbook": self.playbook, "digest": self.driver_digest},
                "resources": dict(sorted(self.resources)), "candidate": dict(sorted(self.candidate)),
                "commands": {"validate": list(self.validate), "activate": list(self.activate)}}


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
    #: plan only: what an approval of this host pins (host key, driver, sha256 of resources and candidate)
    plan: HostPlan | None = None
    #: why a host was `skipped`, as a short code: `drift`, `host key changed`, `not started`, ...
    reason: str | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name, "address": self.address, "status": self.status.value, "reason": self.reason,
            "findings_before": [f.as_dict() for f in self.findings_before],
            "findings_after": [f.as_dict() for f in self.findings_after],
            "changed": self.changed, "backup_id": self.backup_id, "diff": _printable(self.diff),
            "error": _printable(self.error), "notes": [printable(n) for n in self.notes],
            "simulation": _printable(self.simulation)}
        if self.plan is not None:
            out |= self.plan.as_dict()
        return out


def _printable(text: str | None) -> str | None:
    return None if text is None else printable(text)


@dataclass(slots=True)
class RunResult:
    run_id: str
    command: str
    started: float = field(default_factory=time.time)
    finished: float | None = None
    hosts: list[HostResult] = field(default_factory=list)

    def ok(self, statuses: frozenset[Status] = OK_STATUSES) -> bool:
        return all(h.status in statuses for h in self.hosts)

    def as_dict(self) -> dict[str, object]:
        return {"run_id": self.run_id, "command": self.command, "started": _iso(self.started),
                "finished": _iso(self.finished) if self.finished else None,
                "hosts": [h.as_dict() for h in self.hosts]}


@dataclass(frozen=True, slots=True)
class PlannedHost:
    """One host of an approved plan: where it was, the host key seen, and what was approved (`plan`)."""

    name: str
    address: str
    plan: HostPlan


@dataclass(frozen=True, slots=True)
class Plan:
    """An approved plan (`remediate plan -o`), validated at load (`remediate.planfile.load_plan`):
    its run id, creation and expiry (epoch seconds), the digest it carries, whether a signature was
    checked, and the hosts approved (a host the plan could not work is not among them)."""

    path: str
    run_id: str
    hosts: Mapping[str, PlannedHost] = field(default_factory=lambda: MappingProxyType({}))
    created: float = 0.0
    expires: float = 0.0
    digest: str = ""
    signed_by: str | None = None


def new_run_id() -> str:
    """Sortable and unique: UTC timestamp plus random suffix, e.g. 20261128T204700Z-3f9a."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
