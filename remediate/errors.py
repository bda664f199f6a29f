"""The exception tree. Every message says what happened, where, and what to do next.

    RemediateError
     ├── ConfigError          bad inventory, playbook, plan file or CLI input (exit 2, nothing touched)
     ├── TransportError       SSH could not connect, authenticate, or a remote command failed
     │    ├── HostKeyError    unknown or changed host key (never auto-accepted)
     │    └── CommandError    a remote command exited non-zero; carries the command, rc and stderr
     ├── ValidationError      a candidate configuration failed validation on the host
     ├── LockError            another run holds the host's lock
     ├── BackupError          a backup copy is missing or does not match its manifest
     ├── LabError             the local lab cannot be built or torn down
     └── ProbeError           an SMTP session could not be opened or continued (defined in `remediate.smtp`)
          ├── ProbeDropped    the server closed the connection, or a send failed
          ├── ProbeTimeout    no complete reply (or connection) within the timeout
          └── ProbeProtocolError  a reply that is not SMTP

The probe's errors stay inside it: `probe`/`simulate` catch them and record them in the result.
Exit codes are mapped in one place, the CLI.
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


class CommandError(TransportError):
    """A remote command failed; the message names host, command, exit status and stderr."""

    def __init__(self, host: str, command: str, rc: int, stderr: str) -> None:
        self.host, self.command, self.rc, self.stderr = host, command, rc, stderr
        tail = stderr.strip().splitlines()[-3:]
        super().__init__(f"{host}: `{command}` exited {rc}" + (": " + " | ".join(tail) if tail else ""))


class ValidationError(RemediateError):
    """A candidate configuration was refused before it went live."""


class LockError(RemediateError):
    """The per-host lock is held by another run."""


class BackupError(RemediateError):
    """A backup is missing, incomplete or corrupt."""


class LabError(RemediateError):
    """The lab cannot be set up or torn down."""
