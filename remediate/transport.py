"""SSH to one host: connect (host keys always checked), run quoted commands, read, write atomically.

One `Connection` per host, reused for every step, used as a context manager. Commands are argument
lists joined with shlex quoting; `become` prefixes `sudo -n --`. Retries (tenacity) wrap connection
set-up only, never a command. Low-level paramiko and socket errors are translated here, at one
boundary, into TransportError / HostKeyError / CommandError.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from remediate.errors import CommandError, HostKeyError, TransportError

SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"

# Written as one constant script; the path, mode and owner arrive as quoted positional arguments.
ATOMIC_WRITE = (
    'set -eu; d=$(dirname -- "$1"); tmp=$(mktemp -- "$1.remediate.XXXXXX"); '
    'trap \'rm -f -- "$tmp"\' EXIT; cat > "$tmp"; chown -- "$3" "$tmp"; chmod -- "$2" "$tmp"; '
    'sync -- "$tmp"; mv -f -- "$tmp" "$1"; trap - EXIT; sync -- "$d"'
)
CREATE_EXCLUSIVE = 'set -eu; umask 077; mkdir -p -- "$(dirname -- "$1")"; set -C; cat > "$1"'


@dataclass(frozen=True, slots=True)
class Result:
    command: str
    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class FileStat:
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    owner: str = ""
    group: str = ""
    mtime_ns: int = 0


class _Transient(Exception):
    """A connect failure worth retrying (refused, timed out, reset)."""


class Connection:
    """An SSH connection to one inventory host. Connects lazily; close() or `with` releases it."""

    def __init__(self, host: Any, *, retries: int = 3) -> None:
        self.host = host
        self.name: str = host.name
        self._retries = retries
        self._client: paramiko.SSHClient | None = None
        self._jump: Connection | None = None

    # ------------------------------------------------------------------ connect
    def __enter__(self) -> Connection:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    def connect(self) -> None:
        """Open the connection. Raises HostKeyError (never retried) or TransportError."""
        if self._client is not None:
            return
        attempt = retry(retry=retry_if_exception_type(_Transient), stop=stop_after_attempt(self._retries),
                        wait=wait_exponential(multiplier=0.3, max=3), reraise=True)(self._connect_once)
        try:
            attempt()
        except _Transient as exc:
            raise TransportError(f"{self.name}: cannot connect to {self.host.address}:{self.host.port} "
                                 f"after {self._retries} attempts: {exc}") from exc

    def _ssh_options(self) -> dict[str, Any]:
        """Merge ~/.ssh/config (HostName, User, Port, IdentityFile, ProxyJump) under the inventory."""
        opts: dict[str, Any] = {"hostname": self.host.address, "user": self.host.user,
                                "port": self.host.port, "identityfile": None, "proxyjump": None}
        cfg_path = Path(os.path.expanduser(self.host.ssh_config)) if self.host.ssh_config else None
        if cfg_path is not None and cfg_path.is_file():
            cfg = paramiko.SSHConfig.from_path(str(cfg_path)).lookup(self.host.address)
            opts["hostname"] = cfg.get("hostname", opts["hostname"])
            opts["proxyjump"] = cfg.get("proxyjump")
            if cfg.get("identityfile"):
                opts["identityfile"] = os.path.expanduser(cfg["identityfile"][0])
        if self.host.identity_file:
            opts["identityfile"] = os.path.expanduser(self.host.identity_file)
        return opts

    def _connect_once(self) -> None:
        opts = self._ssh_options()
        client = paramiko.SSHClient()
        if os.path.isfile(SYSTEM_KNOWN_HOSTS):
            client.load_system_host_keys(SYSTEM_KNOWN_HOSTS)
        known = os.path.expanduser(self.host.known_hosts or "")
        if known and os.path.isfile(known):
            client.load_host_keys(known)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        sock = None
        if opts["proxyjump"] and opts["proxyjump"].lower() != "none":
            sock = self._open_jump(opts["proxyjump"], opts["hostname"], opts["port"])
        passphrase = os.environ.get(self.host.password_env) if self.host.password_env else None
        try:
            client.connect(opts["hostname"], port=opts["port"], username=opts["user"],
                           key_filename=opts["identityfile"], passphrase=passphrase, sock=sock,
                           timeout=self.host.connect_timeout, banner_timeout=self.host.connect_timeout,
                           auth_timeout=self.host.connect_timeout, allow_agent=True, look_for_keys=True)
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(
                f"{self.name}: host key for {self.host.address} does NOT match known_hosts "
                f"({self.host.known_hosts}); possible man-in-the-middle. Check the key out of band, then "
                "fix known_hosts") from exc
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    f"{self.name}: host key for {self.host.address} is unknown (not in {self.host.known_hosts} "
                    f"or {SYSTEM_KNOWN_HOSTS}); remediate never accepts keys on trust. Verify it and add it, "
                    f"e.g. ssh-keyscan {self.host.address} >> {self.host.known_hosts} after checking the "
                    "fingerprint") from exc
            if isinstance(exc, paramiko.AuthenticationException):
                raise TransportError(f"{self.name}: authentication as {opts['user']} failed "
                                     f"(key {opts['identityfile'] or 'from agent/defaults'})") from exc
            raise _Transient(str(exc)) from exc
        except (OSError, EOFError) as exc:
            raise _Transient(str(exc) or type(exc).__name__) from exc
        self._client = client

    def _open_jump(self, spec: str, hostname: str, port: int) -> paramiko.Channel:
        from dataclasses import replace

        user, _, rest = spec.rpartition("@")
        jhost, _, jport = rest.partition(":")
        jump = replace(self.host, name=f"{self.name}(jump {jhost})", address=jhost,
                       port=int(jport or 22), user=user or self.host.user, ssh_config=None)
        self._jump = Connection(jump, retries=1)
        self._jump.connect()
        assert self._jump._client is not None
        transport = self._jump._client.get_transport()
        assert transport is not None
        return transport.open_channel("direct-tcpip", (hostname, port), ("127.0.0.1", 0))

    @property
    def peer_fingerprint(self) -> str | None:
        """SHA256 fingerprint of the host key the connection verified, OpenSSH style."""
        if self._client is None or self._client.get_transport() is None:
            return None
        return fingerprint(self._client.get_transport().get_remote_server_key())  # type: ignore[union-attr]

    # ------------------------------------------------------------------ run
    def command_line(self, argv: list[str], *, privileged: bool = True) -> str:
        cmd = shlex.join(argv)
        if privileged and self.host.become:
            cmd = "sudo -n -- " + cmd
        return cmd

    def run(self, argv: list[str], *, input: bytes | None = None, check: bool = True,
            timeout: float | None = None, privileged: bool = True) -> Result:
        """Run argv on the host (through sudo when `become`). CommandError when check and rc != 0;
        TransportError when the connection drops or the command outlives `timeout` (default: the
        host's command_timeout)."""
        timeout = timeout or self.host.command_timeout
        self.connect()
        assert self._client is not None
        cmd = self.command_line(argv, privileged=privileged)
        try:
            chan = self._client.get_transport().open_session(timeout=timeout)  # type: ignore[union-attr]
            chan.settimeout(timeout)
            chan.exec_command(cmd)
            if input is not None:
                chan.sendall(input)
            chan.shutdown_write()
            out, err = _drain(chan, timeout)
            rc = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"{self.name}: connection lost or timed out while running `{cmd}`: "
                                 f"{exc or type(exc).__name__}") from exc
        result = Result(cmd, rc, out, err)
        if check and rc != 0:
            raise CommandError(self.name, cmd, rc, result.err)
        return result

    def open_stream(self, argv: list[str], timeout: float = 30.0) -> paramiko.Channel:
        """Start argv with its stdin/stdout as an interactive byte stream (e.g. `smtpd -S`)."""
        self.connect()
        assert self._client is not None
        chan = self._client.get_transport().open_session(timeout=timeout)  # type: ignore[union-attr]
        chan.settimeout(timeout)
        chan.exec_command(self.command_line(argv))
        return chan

    # ------------------------------------------------------------------ files
    def read_file(self, path: str) -> bytes:
        return self.run(["cat", "--", path]).stdout

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).rc == 0

    def stat(self, path: str) -> FileStat:
        out = self.run(["stat", "-c", "%a %u %g %s %.9Y %U %G", "--", path]).out.split()
        sec, _, frac = out[4].partition(".")
        return FileStat(int(out[0], 8), int(out[1]), int(out[2]), int(out[3]), int(sec), out[5], out[6],
                        int(sec) * 10**9 + int((frac or "0").ljust(9, "0")[:9]))

    def write_atomic(self, path: str, data: bytes, *, mode: int, uid: int, gid: int) -> None:
        """Replace `path` with `data`: temp file in the same directory, fsync, chmod/chown, rename."""
        self.run(["sh", "-c", ATOMIC_WRITE, "sh", path, f"{mode:o}", f"{uid}:{gid}"], input=data)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create `path` (mode 0600) only if it does not exist; False when it already existed."""
        result = self.run(["sh", "-c", CREATE_EXCLUSIVE, "sh", path], input=data, check=False)
        if result.rc == 0:
            return True
        if self.exists(path):
            return False
        raise CommandError(self.name, result.command, result.rc, result.err)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class HostKeyCheck:
    """What a host offers against what known_hosts says: `state` is known, unknown or changed."""

    state: str
    key: paramiko.PKey
    known: tuple[str, ...]        # fingerprints known_hosts holds for this address and key type

    @property
    def line(self) -> str:
        """The known_hosts line for the offered key."""
        return f"{self.key.get_name()} {self.key.get_base64()}"


def check_host_key(host: Any) -> HostKeyCheck:
    """Fetch the key the host offers (key exchange only, no authentication) and compare it with the system
    and inventory known_hosts. Nothing is written; TransportError when the host cannot be reached."""
    sock = None
    try:
        sock = socket.create_connection((host.address, host.port), timeout=host.connect_timeout)
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=host.connect_timeout)
            key = transport.get_remote_server_key()
        finally:
            transport.close()
    except (OSError, paramiko.SSHException, EOFError) as exc:
        if sock is not None:
            sock.close()
        raise TransportError(f"{host.name}: cannot reach {host.address}:{host.port} for its host key: {exc}") from exc
    known_keys = paramiko.HostKeys()
    for path in (SYSTEM_KNOWN_HOSTS, os.path.expanduser(host.known_hosts or "")):
        if path and os.path.isfile(path):
            known_keys.load(path)
    name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
    entry = known_keys.lookup(name) or {}
    known = tuple(fingerprint(k) for k in entry.values())
    if key.get_name() in entry:
        state = "known" if entry[key.get_name()] == key else "changed"
    else:
        state = "changed" if known else "unknown"
    return HostKeyCheck(state, key, known)


def _drain(chan: paramiko.Channel, timeout: float) -> tuple[bytes, bytes]:
    """Read stdout and stderr together until the command exits (no deadlock on a full stderr)."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while True:
        if chan.recv_ready():
            out += chan.recv(65536)
            continue
        if chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            continue
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no exit after {timeout:.0f}s")
        # wakes at once on data; an exit status alone does not wake select, so poll it briefly
        select.select([chan], [], [], 0.005)
    while chan.recv_ready():
        out += chan.recv(65536)
    while chan.recv_stderr_ready():
        err += chan.recv_stderr(65536)
    return bytes(out), bytes(err)
