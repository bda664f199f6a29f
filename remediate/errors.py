"""The exception tree. Every message says what happened, where, and what to do next.

    RemediateError
     ├── ConfigError          bad inventory, playbook, plan file or CLI input (exit 2, nothing touched)
     ├── TransportError       SSH could not connect, authenticate, or a remote command failed
     │    ├── HostKeyError    unknown or changed host key (never auto-accepted)
     │    ├── AuthError       the host refused our credentials
     │    ├── CommandError    a remote command exited non-zero; carries the command, rc and stderr
     │    └── CommandTimeout  a remote command did not finish within its timeout (hung, or the link is gone)
     ├── ValidationError      a candidate configuration failed validation on the host
     ├── PlanMismatch         a host is not what the approved plan saw (drift, host key): skipped, untouched
     ├── LockError            another run holds the host's lock
     ├── BackupError          a backup copy is missing or does not match its manifest
     │    └── NoBackupError   the run has no backup of this host at all (neither copy, nor a manifest)
     ├── DriverError          no driver can work this host (its MTA is not supported yet, or not found)
     ├── LabError             the local lab cannot be built or torn down
     │    └── LabSetupError   the machine cannot run the lab (not root, packages missing): a usage problem
     └── ProbeError           an SMTP session could not be opened or continued
          ├── ProbeDropped    the server closed the connection, or a send failed
          ├── ProbeTimeout    no complete reply (or connection) within the timeout
          └── ProbeProtocolError  a reply that is not SMTP

The probe's errors stay inside it: `probe`/`simulate` catch them and record them in the result.
Callers branch on these types, never on message text. Exit codes are mapped in one place,
`remediate.cli.exit_code`.
"""

from __future__ import annotations


class RemediateError(Exception):
    """Base of every error this tool raises on purpose."""


class ConfigError(RemediateError):
    """Bad input: names the file, line and key when it can."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.path, self.line, self.key = path, line, key
        where = ""
        if path:
            where = path + (f":{line}" if line else "")
            where += f": {key}: " if key else ": "
        elif key:
            where = f"{key}: "
        super().__init__(where + message)


class TransportError(RemediateError):
    """SSH trouble on one host."""


class HostKeyError(TransportError):
    """The host key is unknown or does not match known_hosts."""


class AuthError(TransportError):
    """The host refused to authenticate us (wrong user or key)."""


class CommandError(TransportError):
    """A remote command failed; the message names host, command, exit status and stderr."""

    def __init__(self, host: str, command: str, rc: int, stderr: str) -> None:
        self.host, self.command, self.rc, self.stderr = host, command, rc, stderr
        tail = stderr.strip().splitlines()[-3:]
        super().__init__(f"{host}: `{command}` exited {rc}" + (": " + " | ".join(tail) if tail else ""))


class CommandTimeout(TransportError):
    """A remote command did not finish within its timeout: it hangs on the host, or the link is gone."""


class ValidationError(RemediateError):
    """A candidate configuration was refused before it went live."""


class PlanMismatch(RemediateError):
    """A host differs from what the approved plan saw; `reason` is the short code reports carry
    (`drift`, `host key changed`, `address changed`, `driver changed`, `plan differs`)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class LockError(RemediateError):
    """The per-host lock is held by another run."""


class BackupError(RemediateError):
    """A backup is missing, incomplete or corrupt."""


class NoBackupError(BackupError):
    """There is no backup of the requested run for this host, neither locally nor on the host."""


class DriverError(RemediateError):
    """No driver can work this host: its MTA has no driver yet, or no known MTA was found on it."""


class LabError(RemediateError):
    """The lab cannot be set up or torn down."""


class LabSetupError(LabError):
    """This machine cannot run the lab (not root, system packages missing): fix the machine, then retry."""


class ProbeError(RemediateError):
    """An SMTP session could not be opened or continued."""


class ProbeDropped(ProbeError):
    """The server closed the connection, or writing to it failed."""


class ProbeTimeout(ProbeError):
    """No complete reply (or connection) within the timeout."""


class ProbeProtocolError(ProbeError):
    """The server sent something that is not an SMTP reply."""
