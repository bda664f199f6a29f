"""Every remote file and OS primitive, in one place: the only module that builds a remote command.

`Shell` is what the rest of the tool (drivers, backups, locks, rollback) sees of a host: read, stat,
atomic write, exclusive create, mkdir, sha256, list, remove, a private copy of a directory, restore of
metadata, `gather` (many of these in one round trip), and `run`/`open_stream` for a driver's own argument
vectors (quoted by the session; `gather` joins them with shlex). `PosixShell` implements it over an SSH
`Connection` (`become` runs through `sudo -n`); a PowerShell implementation joins for Windows hosts. Where
the tool keeps its own state on a host is a property of the shell (`lock_path`, `backup_root`), not a
constant elsewhere.

Errors: a command that fails raises `CommandError` (host, command, exit status, stderr); a lost
connection or a command past its timeout raises `TransportError`.
"""

from __future__ import annotations

import io
import posixpath
import secrets
import shlex
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

import paramiko

from remediate.errors import CommandError, RemediateError
from remediate.model import Host
from remediate.transport import Connection, Local, Result

# Constant scripts; every path, mode and owner arrives as a quoted positional argument.
ATOMIC_WRITE = (
    'set -eu; d=${1%/*}; tmp=$(mktemp -- "$1.remediate.XXXXXX"); '
    'trap \'rm -f -- "$tmp"\' EXIT; cat > "$tmp"; chown -- "$3" "$tmp"; chmod -- "$2" "$tmp"; '
    'if [ -n "${4:-}" ]; then touch -m -d "$4" -- "$tmp"; fi; '
    # the host's time is the new file's mtime: one stat for it and the replaced file's (whole seconds)
    'if [ -n "${5:-}" ]; then s=$(stat -c %Y -- "$tmp" "$1" 2>/dev/null || :); n=${s%%[!0-9]*}; o=${s#"$n"}; '
    'o=${o#?}; t=$(( n - $5 )); if [ "$t" -gt "${o:-0}" ]; then touch -m -d "@$t" -- "$tmp"; fi; fi; '
    'sync -- "$tmp"; mv -f -- "$tmp" "$1"; trap - EXIT; sync -- "${d:-/}"; sha256sum -- "$1"'
)
REMOVE_IF_SAME = 'cmp -s -- "$1" - && rm -f -- "$1"'
CREATE_EXCLUSIVE = 'set -eu; umask 077; d=${1%/*}; [ -d "${d:-/}" ] || mkdir -p -- "$d"; set -C; cat > "$1"'
STAT_FORMAT = "%a %u %g %s %.9Y %U %G"
# One round trip for many commands: each runs with its stdout and stderr in files of a private directory;
# then the exit statuses, the files' sizes (one `wc -c`) and their bytes (one `cat`), each part after a
# boundary line. The sizes frame the bytes; the boundary only guards the framing.
GATHER_HEAD = (
    'set -u; d=$(mktemp -d); trap \'rm -rf -- "$d"\' EXIT; n=0; '
    'run() { n=$((n+1)); "$@" >"$d/$n.o" 2>"$d/$n.e" </dev/null; echo "$?" >>"$d/rc"; }; '
    # a file that may be absent: exit 3 (and no output) when it does not exist; functions, not one more shell
    'rd() { if [ -e "$1" ] || [ -L "$1" ]; then cat -- "$1"; else return 3; fi; }; '
    f'st() {{ if [ -e "$1" ]; then stat -c "{STAT_FORMAT}" -- "$1"; else return 3; fi; }}'
)
GATHER_TAIL = (
    'f=; i=1; while [ "$i" -le "$n" ]; do f="$f $d/$i.o $d/$i.e"; i=$((i+1)); done; '
    'printf \'%s\\n\' "$B"; cat -- "$d/rc"; printf \'%s\\n\' "$B"; wc -c -- $f; printf \'%s\\n\' "$B"; cat -- $f'
)
# Run a command ($3...), then wait for every child the process named in pid file $1 had before it to exit,
# polling every 20 ms at most $2 times; prints "settled" or the pids still alive. Without a pid, or
# without pgrep, nothing is waited for. The command's own exit status is the script's.
RUN_AND_WAIT_CHILDREN = (
    'set -u; f=$1; n=$2; shift 2; m=; old=; if [ -r "$f" ]; then read -r m rest < "$f" || :; fi; '
    'case $m in ""|*[!0-9]*) ;; *) old=$(pgrep -d " " -P "$m" 2>/dev/null || :);; esac; '
    '"$@" || exit $?; i=0; while [ -n "$old" ] && [ "$i" -lt "$n" ]; do left=; '
    'for p in $old; do if [ -d "/proc/$p" ]; then left="$left $p"; fi; done; old=$left; '
    'if [ -n "$old" ]; then i=$((i+1)); sleep 0.02; fi; done; '
    'if [ -n "$old" ]; then echo "still running:$old"; else echo settled; fi'
)
# A private copy of a directory with some files replaced, at a new path $1 (mkdir fails on anything already
# there, a symlink included; the name holds 64 random bits): copy (modes, owners, times kept), then the tar
# archive on stdin over it (its members' modes, owners and times). Removed again when a step fails.
PRIVATE_COPY = (
    'set -eu; umask 077; mkdir -m 700 -- "$1"; trap \'rm -rf -- "$1"\' EXIT; cp -a -- "$2/." "$1"; '
    'tar -x -p --same-owner --numeric-owner -f - -C "$1"; trap - EXIT'
)
# Many files written under one root in one round trip: directories made 0700, parents too ($2: their
# absolute paths, one per line), the files (their paths relative to the root, the other arguments) unpacked
# from a tar on stdin into a private directory beside them, fsynced and renamed into place in the order
# given, their directories fsynced, then their sha256 read back. One process per step, not per file.
PUT_FILES = (
    'set -eu; umask 077; r=$1; m=$2; shift 2; nl=\'\n\'; if [ -n "$m" ]; then IFS=$nl; set -f; '
    'mkdir -p -- $m; chmod 700 -- $m; unset IFS; set +f; fi; t=$(mktemp -d -- "$r/.remediate.XXXXXX"); '
    'trap \'rm -rf -- "$t"\' EXIT; tar -x -p --same-owner --numeric-owner -f - -C "$t"; cd -- "$t"; '
    'sync -- "$@"; for f in "$@"; do mv -f -- "$t/$f" "$r/$f"; done; cd -- "$r"; s=; for f in "$@"; do '
    'case $f in */*) s="$s${f%/*}$nl";; esac; done; IFS=$nl; set -f; sync -- $s .; unset IFS; set +f; '
    'sha256sum -- "$@"'
)


@dataclass(frozen=True, slots=True)
class FileStat:
    """A file's metadata: permission bits, owner and group (ids and names), size in bytes, mtime (s and ns)."""

    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    owner: str = ""
    group: str = ""
    mtime_ns: int = 0


@dataclass(frozen=True, slots=True)
class Read:
    """Gather a file's bytes (None when `missing_ok` and it does not exist)."""

    path: str
    missing_ok: bool = False


@dataclass(frozen=True, slots=True)
class Stat:
    """Gather a file's `FileStat` (None when `missing_ok` and it does not exist)."""

    path: str
    missing_ok: bool = False


@dataclass(frozen=True, slots=True)
class Run:
    """Gather a command's `Result` (CommandError for a non-zero exit when `check`)."""

    argv: tuple[str, ...]
    check: bool = True


Op = Read | Stat | Run


@dataclass(frozen=True, slots=True)
class PrivateCopy:
    """A private copy of a directory on the host (`path`), and what the ops gathered with it returned."""

    path: str
    results: list[Any]


class Shell(Protocol):
    """The primitives every room above the transport uses to touch a host."""

    name: str
    host: Host
    lock_path: str
    backup_root: str

    @property
    def peer_fingerprint(self) -> str | None: ...
    def close(self) -> None: ...
    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
            timeout: float | None = None) -> Result: ...
    def run_and_wait_children(self, argv: Sequence[str], *, pidfile: str, within: float,
                              timeout: float | None = None) -> bool: ...
    def open_stream(self, argv: Sequence[str]) -> paramiko.Channel: ...
    def gather(self, ops: Sequence[Op]) -> list[Any]: ...
    def private_copy(self, prefix: str, source: str, files: Mapping[str, tuple[bytes, FileStat]],
                     then: Callable[[str], Sequence[Op]] | None = None) -> AbstractContextManager[PrivateCopy]: ...
    def read(self, path: str) -> bytes: ...
    def exists(self, path: str) -> bool: ...
    def stat(self, path: str) -> FileStat: ...
    def write_atomic(self, path: str, data: bytes, *, mode: int, uid: int, gid: int,
                     mtime_ns: int | None = None, backdate: int = 0) -> str: ...
    def put_files(self, root: str, files: Mapping[str, bytes], *, dirs: Sequence[str] = ()) -> dict[str, str]: ...
    def create_exclusive(self, path: str, data: bytes) -> bool: ...
    def mkdir(self, *paths: str, mode: int = 0o700) -> None: ...
    def sha256(self, paths: Sequence[str]) -> dict[str, str]: ...
    def listdir(self, path: str) -> list[str]: ...
    def remove(self, path: str, *, recursive: bool = False) -> None: ...
    def remove_if_same(self, path: str, data: bytes) -> bool: ...
    def restore_metadata(self, path: str, st: FileStat) -> None: ...
    def listener(self, port: int) -> str | None: ...
    def signal(self, pidfile: str, name: str, *, group: bool = False) -> None: ...
    def running(self, pidfile: str) -> int | None: ...



class PosixShell:
    """`Shell` over an SSH session to a POSIX host (GNU coreutils, iproute2's `ss`); over `Local` it runs
    the same commands on this machine."""

    lock_path = "/var/lib/remediate/lock.json"
    backup_root = "/var/backups/remediate"

    def __init__(self, conn: Connection | Local) -> None:
        self.conn = conn
        self.host = conn.host
        self.name = conn.name
        #: private copies done with: removed by the shell's next command of its own, or at `close`
        self._leftovers: list[str] = []

    def _tidy(self, script: str) -> str:
        """`script`, first removing the private copies done with (their removal rides along: no round trip)."""
        if not self._leftovers:
            return script
        paths, self._leftovers = self._leftovers, []
        return f"rm -rf -- {shlex.join(paths)} 2>/dev/null || :\n{script}"

    @property
    def peer_fingerprint(self) -> str | None:
        """SHA256 fingerprint of the host key the session verified."""
        return self.conn.peer_fingerprint

    def close(self) -> None:
        """Remove what is left of private copies (one command, when there are any), then disconnect."""
        if self._leftovers:
            with suppress(RemediateError):
                self.conn.run(["sh", "-c", self._tidy(":")], check=False)
        self.conn.close()

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
            timeout: float | None = None) -> Result:
        """Run a driver's argument vector (privileged when the host uses `become`)."""
        if self._leftovers:   # a driver's command runs as given: the private copies go first, on their own
            self.conn.run(["sh", "-c", self._tidy(":")], check=False)
        return self.conn.run(list(argv), input=input, check=check, timeout=timeout)

    def run_and_wait_children(self, argv: Sequence[str], *, pidfile: str, within: float,
                              timeout: float | None = None) -> bool:
        """Run `argv` (as `run`, CommandError when it fails), then wait up to `within` seconds, in the same round
        trip, for every child process that the process named in `pidfile` had before it to exit: after a
        reload, the daemon's children from before it are gone (an old idle server process may still take one
        connection, with the old configuration, and hold up new ones meanwhile). True when they
        are gone (or there were none, or no pid to ask about), False when some still ran at `within`."""
        polls = max(0, round(within / 0.02))
        result = self.conn.run(["sh", "-c", self._tidy(RUN_AND_WAIT_CHILDREN), "sh", pidfile, str(polls), *argv],
                               timeout=timeout)
        return result.out.strip().splitlines()[-1:] == ["settled"]

    def open_stream(self, argv: Sequence[str]) -> paramiko.Channel:
        """Start argv with stdin/stdout as one byte stream (an MTA's own SMTP test session)."""
        return self.conn.open_stream(list(argv))

    def gather(self, ops: Sequence[Op]) -> list[Any]:
        """Every op in one remote round trip, in order: `Read` -> bytes, `Stat` -> FileStat (either None when
        missing and `missing_ok`), `Run` -> Result. CommandError for the first op that failed (a `Run` without
        `check` never does); each op's command runs with stdin closed. An op given twice runs once."""
        return self._gather(ops)

    def _gather(self, ops: Sequence[Op], prelude: Sequence[str] = (), input: bytes | None = None) -> list[Any]:
        """`gather`, after `prelude` (an argv that reads `input` on stdin; CommandError, and no op runs, when
        it fails)."""
        if not ops and not prelude:
            return []
        unique = list(dict.fromkeys(ops))
        boundary = secrets.token_hex(16)
        lines = [f"B={boundary}", *([f"{shlex.join(prelude)} || exit $?"] if prelude else []), GATHER_HEAD]
        for op in unique:
            if isinstance(op, Read):
                argv = ["rd", op.path] if op.missing_ok else ["cat", "--", op.path]
            elif isinstance(op, Stat):
                argv = ["st", op.path] if op.missing_ok else ["stat", "-c", STAT_FORMAT, "--", op.path]
            else:
                argv = list(op.argv)
            lines.append("run " + shlex.join(argv))
        lines.append(GATHER_TAIL if unique else "exit 0")
        out = self.conn.run(["sh", "-c", self._tidy("\n".join(lines))], input=input).stdout
        if not unique:
            return []
        mark = f"{boundary}\n".encode()
        parts = out.split(mark, 3)
        if len(parts) != 4 or parts[0]:
            raise CommandError(self.name, "gather", 1, "garbled output from the host")
        codes = parts[1].split()
        sizes = [int(line.split()[0]) for line in parts[2].splitlines()[:2 * len(unique)]]
        if len(codes) != len(unique) or len(sizes) != 2 * len(unique):
            raise CommandError(self.name, "gather", 1, "garbled output from the host")
        body, pos, raw = parts[3], 0, {}
        for i, op in enumerate(unique):
            nout, nerr = sizes[2 * i], sizes[2 * i + 1]
            stdout, stderr = body[pos:pos + nout], body[pos + nout:pos + nout + nerr]
            pos += nout + nerr
            raw[op] = Result(shlex.join(_argv(op)), int(codes[i]), stdout, stderr)
        return [self._gathered(op, raw[op]) for op in ops]

    def _gathered(self, op: Op, result: Result) -> Any:
        if isinstance(op, Read | Stat) and op.missing_ok and result.rc == 3 and not result.stdout:
            return None
        if result.rc != 0 and (not isinstance(op, Run) or op.check):
            raise CommandError(self.name, result.command, result.rc, result.err)
        if isinstance(op, Read):
            return result.stdout
        if isinstance(op, Stat):
            return _stat(result.out)
        return result

    @contextmanager
    def private_copy(self, prefix: str, source: str, files: Mapping[str, tuple[bytes, FileStat]],
                     then: Callable[[str], Sequence[Op]] | None = None) -> Iterator[PrivateCopy]:
        """A private temporary copy of directory `source` (modes, owners and times kept, its own too: made new,
        by this user, so nobody else can change what validation reads) in which each
        of `files` ({path relative to source: (bytes, stat)}) is replaced by the given bytes, with that
        stat's mode, owner and modification time, at /tmp/`prefix`.<random>; the ops `then(path)` gives are
        gathered in the same round trip (`PrivateCopy.results`). Removed with everything in it afterwards, by
        the shell's next command of its own (no round trip of its own), a driver's next command, or `close`."""
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, (data, st) in files.items():
                info = tarfile.TarInfo(posixpath.normpath(rel))
                info.size, info.mode, info.uid, info.gid = len(data), st.mode, st.uid, st.gid
                info.mtime = (st.mtime_ns / 10**9) if st.mtime_ns else st.mtime
                tar.addfile(info, io.BytesIO(data))
        path = f"/tmp/{prefix}.{secrets.token_hex(8)}"   # noqa: S108 - a new name; mkdir refuses what exists
        ops = list(then(path)) if then is not None else []
        results = self._gather(ops, ["sh", "-c", PRIVATE_COPY, "sh", path, source.rstrip("/") or "/"],
                               archive.getvalue())
        try:
            yield PrivateCopy(path, results)
        finally:
            self._leftovers.append(path)

    # ------------------------------------------------------------------ files
    def read(self, path: str) -> bytes:
        return self.conn.run(["cat", "--", path]).stdout

    def exists(self, path: str) -> bool:
        return self.conn.run(["test", "-e", path], check=False).rc == 0

    def stat(self, path: str) -> FileStat:
        return _stat(self.conn.run(["stat", "-c", STAT_FORMAT, "--", path]).out)

    def write_atomic(self, path: str, data: bytes, *, mode: int, uid: int, gid: int,
                     mtime_ns: int | None = None, backdate: int = 0) -> str:
        """Replace `path` with `data`: temp file in the same directory, chmod/chown (and the modification time
        `mtime_ns`, nanoseconds since the epoch, when given), fsync, rename. Returns the sha256 (hex) of the
        file now at `path`, read back on the host after the rename. CommandError naming `path` and what the
        host said (a full or read-only filesystem) when it fails; until the rename `path` is untouched (a
        temporary file that could not be written whole is removed).

        `backdate` (seconds, by the host's clock): the new file's modification time is that long before the
        write, unless that is not later than the modification time of the file it replaces (then it is the
        time of the write). For an MTA that waits for a freshly modified file to "cool down" before reading
        it (the playbook's `backdate_writes`); the file is renamed into place complete, so the wait guards
        nothing here."""
        when = "" if mtime_ns is None else "@{}.{:09d}".format(*divmod(mtime_ns, 10**9))
        age = str(backdate) if backdate > 0 and mtime_ns is None else ""
        result = self.conn.run(["sh", "-c", self._tidy(ATOMIC_WRITE), "sh", path, f"{mode:o}", f"{uid}:{gid}", when,
                                age], input=data, check=False)
        if result.rc != 0:
            raise CommandError(self.name, f"atomic write of {path}", result.rc, result.err)
        out = result.out
        return out.split()[0].lstrip("\\") if out.split() else ""

    def put_files(self, root: str, files: Mapping[str, bytes], *, dirs: Sequence[str] = ()) -> dict[str, str]:
        """Write `files` ({path relative to `root`: bytes}, each 0600 root:root) in one round trip: first the
        directories `dirs` (absolute; made 0700, parents too, existing ones set to 0700: they must include
        every file's directory), then each file fsynced and renamed into place in the order given (a
        crash leaves whole files, never a torn one, and a later file only after the earlier ones). Returns
        {relative path: sha256 read back on the host}."""
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, data in files.items():
                info = tarfile.TarInfo(rel)
                info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o600, 0, 0, time.time()
                tar.addfile(info, io.BytesIO(data))
        rels = [posixpath.normpath(rel) for rel in files]
        if any(rel.startswith(("/", "..")) for rel in rels):
            raise ValueError(f"put_files: paths must lie under {root}: {rels}")
        if any("\n" in path for path in (*rels, *dirs)):
            raise ValueError(f"put_files: a path with a line break: {[*dirs, *rels]}")
        out = self.conn.run(["sh", "-c", self._tidy(PUT_FILES), "sh", root, "\n".join(dirs), *rels],
                            input=archive.getvalue()).out.split()
        return {path.lstrip("\\"): digest.lstrip("\\") for digest, path in zip(out[0::2], out[1::2], strict=True)}

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create `path` (mode 0600, parents made) only if it does not exist; False when it already did."""
        result = self.conn.run(["sh", "-c", self._tidy(CREATE_EXCLUSIVE), "sh", path], input=data, check=False)
        if result.rc == 0:
            return True
        if self.exists(path):
            return False
        raise CommandError(self.name, result.command, result.rc, result.err)

    def mkdir(self, *paths: str, mode: int = 0o700) -> None:
        """Create each directory (and parents) with `mode`; existing ones are kept."""
        self.conn.run(["install", "-d", "-m", f"{mode:04o}", "--", *paths])

    def sha256(self, paths: Sequence[str]) -> dict[str, str]:
        """{path: sha256 hex} of each readable file; CommandError when one cannot be read."""
        out = self.conn.run(["sha256sum", "--", *paths]).out.split()
        return {path.lstrip("\\"): digest.lstrip("\\") for digest, path in zip(out[0::2], out[1::2], strict=True)}

    def listdir(self, path: str) -> list[str]:
        """Names in a directory (hidden ones too); empty when it does not exist."""
        result = self.conn.run(["ls", "-1A", "--", path], check=False)
        return result.out.splitlines() if result.rc == 0 else []

    def remove(self, path: str, *, recursive: bool = False) -> None:
        self.conn.run(["rm", "-rf" if recursive else "-f", "--", path])

    def remove_if_same(self, path: str, data: bytes) -> bool:
        """Remove `path` only if its bytes are exactly `data` (compared on the host); True if it was removed."""
        return self.conn.run(["sh", "-c", self._tidy(REMOVE_IF_SAME), "sh", path], input=data, check=False).rc == 0

    def restore_metadata(self, path: str, st: FileStat) -> None:
        """Give `path` back its owner, mode and mtime (to the nanosecond)."""
        self.conn.run(["chown", f"{st.uid}:{st.gid}", "--", path])
        self.conn.run(["chmod", f"{st.mode:o}", "--", path])
        sec, ns = divmod(st.mtime_ns or st.mtime * 10**9, 10**9)
        self.conn.run(["touch", "-m", "-d", f"@{sec}.{ns:09d}", "--", path])

    # ------------------------------------------------------------------ processes
    def signal(self, pidfile: str, name: str, *, group: bool = False) -> None:
        """Send signal `name` (e.g. HUP) to the process whose pid is the first word of `pidfile`, or with
        `group` to its whole process group (the pid as a group id, as `kill -- -PID`: a daemon that leads
        its own group, such as an MTA's master and its children)."""
        pid = self._pid(pidfile)
        if pid is None:
            raise CommandError(self.name, f"read {pidfile}", 1, f"no pid in {pidfile}")
        self.conn.run(["kill", f"-{name}", "--", f"-{pid}" if group else str(pid)])

    def running(self, pidfile: str) -> int | None:
        """The pid `pidfile` names when that process is alive; None when the file is missing or empty or
        the process is gone (a zombie counts as gone)."""
        pid = self._pid(pidfile)
        if pid is None:
            return None
        state = self.conn.run(["cat", "--", f"/proc/{pid}/stat"], check=False)
        alive = state.rc == 0 and state.out.rpartition(")")[2].split()[:1] not in (["Z"], ["X"], [])
        return pid if alive else None

    def _pid(self, pidfile: str) -> int | None:
        result = self.conn.run(["cat", "--", pidfile], check=False)
        words = result.out.split() if result.rc == 0 else []
        return int(words[0]) if words and words[0].isdigit() and int(words[0]) > 1 else None

    def listener(self, port: int) -> str | None:
        """The name of the process listening on TCP `port` (e.g. `master`, `exim4`), or None."""
        out = self.conn.run(["ss", "-Hltnp", f"sport = :{port}"], check=False).out
        for line in out.splitlines():
            start = line.find('(("')
            if start >= 0:
                return line[start + 3:line.index('"', start + 3)]
        return None


def _stat(text: str) -> FileStat:
    """A FileStat from `stat -c STAT_FORMAT` output."""
    out = text.split()
    sec, _, frac = out[4].partition(".")
    return FileStat(int(out[0], 8), int(out[1]), int(out[2]), int(out[3]), int(sec), out[5], out[6],
                    int(sec) * 10**9 + int((frac or "0").ljust(9, "0")[:9]))


def _argv(op: Op) -> list[str]:
    if isinstance(op, Read):
        return ["cat", "--", op.path]
    if isinstance(op, Stat):
        return ["stat", "--", op.path]
    return list(op.argv)


def connect(host: Host) -> PosixShell:
    """A connected shell for `host`, by its connection kind; `close()` it after use. TransportError
    (HostKeyError, AuthError) when it cannot connect."""
    conn = Connection(host)
    conn.connect()
    return PosixShell(conn)


@contextmanager
def open_shell(host: Host) -> Iterator[Shell]:
    """`connect`, closed after the block."""
    shell = connect(host)
    try:
        yield shell
    finally:
        shell.close()


def under(root: str, path: str) -> bool:
    """True when absolute `path` lies inside directory `root` (no `..` escapes)."""
    root, path = posixpath.normpath(root), posixpath.normpath(path)
    return path.startswith(root.rstrip("/") + "/")
