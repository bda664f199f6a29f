"""SSH to one host: connect (host keys always checked), run quoted argument vectors, open streams.

One `Connection` per host, reused for every step, used as a context manager. Commands are argument
lists joined with shlex quoting; `become` prefixes `sudo -n --`. Retries (tenacity) wrap connection
set-up only, never a command. Low-level paramiko and socket errors are translated here, at one
boundary, into TransportError / HostKeyError / AuthError / CommandError. Files and OS primitives are
built on this by `remediate.shell`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import select
import shlex
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from remediate.errors import AuthError, CommandError, CommandTimeout, HostKeyError, TransportError
from remediate.model import Host

SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"


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


class _Transient(Exception):
    """A connect failure worth retrying (refused, timed out, reset)."""


class _Refuse(paramiko.MissingHostKeyPolicy):
    """Refuse every key known_hosts does not hold, with our own error (never a message to parse)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        known = self.host.connection.known_hosts
        raise HostKeyError(
            f"{self.host.name}: host key for {self.host.address} is unknown (not in {known} or "
            f"{SYSTEM_KNOWN_HOSTS}); remediate never accepts keys on trust. Check `remediate hostkeys` out of "
            f"band, then add it (`remediate hostkeys --write`, or ssh-keyscan {self.host.address} >> {known} "
            "after checking the fingerprint)")


def _open_later(transport: paramiko.Transport, timeout: float) -> Future[paramiko.Channel]:
    """Open a session channel in a daemon thread (it waits a round trip; a run that ends meanwhile does not
    wait for it)."""
    future: Future[paramiko.Channel] = Future()

    def work() -> None:
        try:
            future.set_result(transport.open_session(timeout=timeout))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the channel
            future.set_exception(exc)

    threading.Thread(target=work, name="ssh-channel", daemon=True).start()
    return future


def _exec(chan: paramiko.Channel, command: str, timeout: float) -> None:
    """`exec_command` within `timeout` seconds: paramiko waits for the server's reply to the request without a
    timeout, and over a link that went silent (a channel opened before it did) that reply never comes; the
    channel is closed then (which ends the wait) and TimeoutError raised."""
    expired = threading.Event()

    def give_up() -> None:
        expired.set()
        chan.close()

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        chan.exec_command(command)
    except paramiko.SSHException:
        if expired.is_set():
            raise TimeoutError(f"no answer to the command request within {timeout:g}s") from None
        raise
    finally:
        watchdog.cancel()


def _close_channel(spare: Future[paramiko.Channel]) -> None:
    """Close a spare channel nobody took (once its open has finished, whichever way)."""
    with contextlib.suppress(Exception):
        spare.result().close()


class Connection:
    """An SSH connection to one inventory host. Connects lazily; close() or `with` releases it."""

    def __init__(self, host: Host, *, retries: int = 3) -> None:
        self.host = host
        self.ssh = host.connection
        self.name: str = host.name
        self._retries = retries
        self._client: paramiko.SSHClient | None = None
        self._jump: Connection | None = None
        self._spare: Future[paramiko.Channel] | None = None   # the next command's channel, opening

    # ------------------------------------------------------------------ connect
    def __enter__(self) -> Connection:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.add_done_callback(_close_channel)
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
            raise TransportError(f"{self.name}: cannot connect to {self.host.address}:{self.ssh.port} "
                                 f"after {self._retries} attempts: {exc}") from exc
        if self.ssh.become:
            self._check_become()

    def _check_become(self) -> None:
        """With `become`, sudo must run commands as root without asking: AuthError (before any other command,
        so before anything is read or written) naming the host, the user and what sudo said when it does not
        (a password asked for, or the user not allowed). The connection is closed then."""
        result = self.run(["sudo", "-n", "--", "true"], check=False, privileged=False)
        if result.rc == 0:
            return
        self.close()
        said = " | ".join(result.err.strip().splitlines()[-2:]) or f"exit status {result.rc}"
        raise AuthError(f"{self.name}: become: sudo refused to run commands as root for {self.ssh.user} "
                        f"(sudo said: {said}); remediate runs `sudo -n` and never types a password: allow "
                        f"{self.ssh.user} to run commands as root without one (NOPASSWD in sudoers), or connect as "
                        "root. Nothing was read or changed")

    def _ssh_options(self) -> dict[str, Any]:
        """Merge ~/.ssh/config (HostName, User, Port, IdentityFile, ProxyJump) under the inventory."""
        opts: dict[str, Any] = {"hostname": self.host.address, "user": self.ssh.user,
                                "port": self.ssh.port, "identityfile": None, "proxyjump": None}
        cfg_path = Path(os.path.expanduser(self.ssh.ssh_config)) if self.ssh.ssh_config else None
        if cfg_path is not None and cfg_path.is_file():
            cfg = paramiko.SSHConfig.from_path(str(cfg_path)).lookup(self.host.address)
            opts["hostname"] = cfg.get("hostname", opts["hostname"])
            opts["proxyjump"] = cfg.get("proxyjump")
            if cfg.get("identityfile"):
                opts["identityfile"] = os.path.expanduser(cfg["identityfile"][0])
        if self.ssh.identity_file:
            opts["identityfile"] = os.path.expanduser(self.ssh.identity_file)
        return opts

    def _connect_once(self) -> None:
        opts = self._ssh_options()
        client = paramiko.SSHClient()
        if os.path.isfile(SYSTEM_KNOWN_HOSTS):
            client.load_system_host_keys(SYSTEM_KNOWN_HOSTS)
        known = os.path.expanduser(self.ssh.known_hosts or "")
        if known and os.path.isfile(known):
            client.load_host_keys(known)
        client.set_missing_host_key_policy(_Refuse(self.host))
        sock = None
        if opts["proxyjump"] and opts["proxyjump"].lower() != "none":
            sock = self._open_jump(opts["proxyjump"], opts["hostname"], opts["port"])
        pkey = self._identity(opts["identityfile"])
        timeout = self.ssh.connect_timeout
        try:
            if sock is None:
                sock = _tcp(opts["hostname"], opts["port"], timeout)
            client.connect(opts["hostname"], port=opts["port"], username=opts["user"], pkey=pkey, sock=sock,
                           timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, allow_agent=True,
                           look_for_keys=True)
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(
                f"{self.name}: host key for {self.host.address} does NOT match known_hosts "
                f"({self.ssh.known_hosts}): the host offers {fingerprint(exc.key)}, known_hosts has "
                f"{fingerprint(exc.expected_key)}; possible man-in-the-middle. Refused before authentication. "
                "Check the key out of band, then fix known_hosts") from exc
        except paramiko.AuthenticationException as exc:
            raise AuthError(f"{self.name}: authentication as {opts['user']} failed (key: "
                            f"{'the identity_file' if pkey else 'from the agent or ~/.ssh defaults'}); check "
                            "that its public key is in the user's authorized_keys") from exc
        except paramiko.SSHException as exc:
            raise _Transient(str(exc)) from exc
        except (OSError, EOFError) as exc:
            raise _Transient(str(exc) or type(exc).__name__) from exc
        self._client = client

    def _identity(self, path: str | None) -> paramiko.PKey | None:
        """The private key at `path` (None: the agent and ~/.ssh defaults), decrypted with the passphrase the
        environment variable `password_env` names. AuthError (never retried) when it cannot be read: the
        message names neither the path nor the passphrase, which may be secrets in their own right."""
        if path is None:
            return None
        passphrase = os.environ.get(self.ssh.password_env) if self.ssh.password_env else None
        try:
            return paramiko.PKey.from_path(path, passphrase.encode() if passphrase else None)
        except (paramiko.PasswordRequiredException, TypeError) as exc:   # cryptography: TypeError
            raise AuthError(f"{self.name}: the identity_file is encrypted and no passphrase was given (set "
                            f"password_env to the NAME of an environment variable that holds it)") from exc
        except (paramiko.SSHException, ValueError) as exc:
            env = f"${self.ssh.password_env}" if self.ssh.password_env else "password_env"
            raise AuthError(f"{self.name}: the identity_file cannot be read as a private key (wrong passphrase "
                            f"in {env}, or not a key)") from exc
        except OSError as exc:
            raise AuthError(f"{self.name}: the identity_file cannot be read ({exc.strerror or 'unreadable'})") \
                from exc

    def _open_jump(self, spec: str, hostname: str, port: int) -> paramiko.Channel:
        from dataclasses import replace

        user, _, rest = spec.rpartition("@")
        jhost, _, jport = rest.partition(":")
        ssh = replace(self.ssh, port=int(jport or 22), user=user or self.ssh.user, ssh_config=None)
        jump = replace(self.host, name=f"{self.name}(jump {jhost})", address=jhost, connection=ssh)
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
        if privileged and self.ssh.become:
            cmd = "sudo -n -- " + cmd
        return cmd

    def run(self, argv: list[str], *, input: bytes | None = None, check: bool = True,
            timeout: float | None = None, privileged: bool = True) -> Result:
        """Run argv on the host (through sudo when `become`). CommandError when check and rc != 0;
        CommandTimeout when the command outlives `timeout` seconds (default: the host's command_timeout);
        TransportError when the connection drops."""
        timeout = timeout or self.ssh.command_timeout
        self.connect()
        assert self._client is not None
        cmd = self.command_line(argv, privileged=privileged)
        try:
            chan = self._session(timeout)
            chan.settimeout(timeout)
            _exec(chan, cmd, timeout)
            if input is not None:
                _send_input(chan, input)
            chan.shutdown_write()
            out, err = _drain(chan, timeout)
            rc = chan.recv_exit_status()
            chan.close()
        except TimeoutError as exc:
            raise CommandTimeout(f"{self.name}: `{cmd}` did not finish within {timeout:g}s (hung on the host, "
                                 "or the connection is gone)") from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"{self.name}: connection lost or timed out while running `{cmd}`: "
                                 f"{exc or type(exc).__name__}") from exc
        result = Result(cmd, rc, out, err)
        if check and rc != 0:
            raise CommandError(self.name, cmd, rc, result.err)
        return result

    def open_stream(self, argv: list[str], timeout: float = 30.0) -> paramiko.Channel:
        """Start argv with its stdin/stdout as an interactive byte stream (an MTA's own SMTP test session)."""
        self.connect()
        assert self._client is not None
        chan = self._session(timeout)
        chan.settimeout(timeout)
        try:
            _exec(chan, self.command_line(argv), timeout)
        except TimeoutError as exc:
            raise paramiko.SSHException(str(exc)) from exc
        return chan

    def _session(self, timeout: float) -> paramiko.Channel:
        """A session channel for the next command, within `timeout` seconds in all: the spare opened while the
        previous command ran when there is one, else a new one; then the next spare starts opening. Opening a
        channel is a round trip of its own (RFC 4254 5.1: the open must be confirmed before a request); a
        spare takes it off each command's path. When the spare could not be opened (the link went away) a
        fresh open within the time left says why."""
        transport = self._client.get_transport() if self._client is not None else None
        if transport is None:
            raise paramiko.SSHException("not connected")
        deadline = time.monotonic() + timeout
        spare, self._spare = self._spare, None
        chan = None
        if spare is not None:
            try:
                chan = spare.result(timeout=timeout)
            except (paramiko.SSHException, OSError, EOFError, TimeoutError):
                spare.add_done_callback(_close_channel)
        if chan is None or chan.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise paramiko.SSHException(f"no session channel opened within {timeout:g}s")
            chan = transport.open_session(timeout=left)
        self._spare = _open_later(transport, timeout)
        return chan


class Local:
    """Runs argument vectors on this machine (no SSH, no become), with the same `run`/`open_stream` shape as
    `Connection`: for a shell whose host is this machine, and for tests of the shell's own commands."""

    peer_fingerprint = None

    def __init__(self, host: Host) -> None:
        self.host = host
        self.name = host.name

    def connect(self) -> None:
        """Nothing to open."""

    def close(self) -> None:
        """Nothing to close."""

    def run(self, argv: list[str], *, input: bytes | None = None, check: bool = True,
            timeout: float | None = None, privileged: bool = True) -> Result:
        import subprocess

        proc = subprocess.run(argv, input=input or b"", capture_output=True,
                              timeout=timeout or self.host.connection.command_timeout, check=False)
        result = Result(shlex.join(argv), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandError(self.name, result.command, proc.returncode, result.err)
        return result

    def open_stream(self, argv: list[str], timeout: float = 30.0) -> Any:
        raise TransportError(f"{self.name}: a local shell opens no streams")


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


def check_host_key(host: Host) -> HostKeyCheck:
    """Fetch the key the host offers (key exchange only, no authentication) and compare it with the system
    and inventory known_hosts. Nothing is written; TransportError when the host cannot be reached."""
    sock = None
    try:
        ssh = host.connection
        sock = socket.create_connection((host.address, ssh.port), timeout=ssh.connect_timeout)
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=ssh.connect_timeout)
            key = transport.get_remote_server_key()
        finally:
            transport.close()
    except (OSError, paramiko.SSHException, EOFError) as exc:
        if sock is not None:
            sock.close()
        raise TransportError(f"{host.name}: cannot reach {host.address}:{host.connection.port} for its host key: "
                             f"{exc}") from exc
    known_keys = paramiko.HostKeys()
    for path in (SYSTEM_KNOWN_HOSTS, os.path.expanduser(host.connection.known_hosts or "")):
        if path and os.path.isfile(path):
            known_keys.load(path)
    name = known_hosts_name(host)
    entry = known_keys.lookup(name) or {}
    known = tuple(fingerprint(k) for k in entry.values())
    if key.get_name() in entry:
        state = "known" if entry[key.get_name()] == key else "changed"
    else:
        state = "changed" if known else "unknown"
    return HostKeyCheck(state, key, known)


def known_hosts_name(host: Host) -> str:
    """How known_hosts names the host: its address, or `[address]:port` off port 22."""
    port = host.connection.port
    return host.address if port == 22 else f"[{host.address}]:{port}"


def _send_input(chan: paramiko.Channel, data: bytes) -> None:
    """Send a command's stdin. A command may exit without reading it (`set -C; cat > FILE` when FILE exists):
    its channel is then closed and its exit status tells the caller what happened, so that is not an error;
    any other failure to send is (OSError)."""
    try:
        chan.sendall(data)
    except OSError:
        if not (chan.closed or chan.exit_status_ready()):
            raise


def _tcp(hostname: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection with Nagle's algorithm off: SSH sends small packets back to back (a channel request,
    then its data and EOF), and with Nagle each waits for the peer's delayed ACK, about 40 ms per remote
    command on Linux (RFC 1122 4.2.3.2; OpenSSH sets TCP_NODELAY on interactive sessions for this reason)."""
    sock = socket.create_connection((hostname, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _drain(chan: paramiko.Channel, timeout: float) -> tuple[bytes, bytes]:
    """Read stdout and stderr together until the server said EOF and the command's exit status came (no
    deadlock on a full stderr). Blocks in select on the channel, which wakes on data on either stream and on
    EOF (paramiko sets its pipe for both), then waits for the exit status: no polling."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while True:
        if chan.recv_ready():
            out += chan.recv(65536)
        elif chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        elif chan.eof_received:
            break
        elif (left := deadline - time.monotonic()) <= 0:
            raise TimeoutError(f"no exit after {timeout:.0f}s")
        else:
            select.select([chan], [], [], left)
    # an exit status may come just before or after EOF; the output is complete once EOF is in
    if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError(f"no exit after {timeout:.0f}s")
    return bytes(out), bytes(err)
