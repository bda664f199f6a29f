"""Pid 1 of one lab host: builds its root filesystem view, starts sshd and its MTA, reaps, waits.

Run by the lab as
    nsenter --net=/run/netns/NS unshare --mount --pid --uts --ipc --fork --kill-child=SIGKILL \
        python3 hostinit.py SPEC.json
so this process is pid 1 of a fresh pid namespace: when it dies, the kernel kills every process of the
host (sshd, Postfix, sessions), which is how `lab down` stops a host by the one pid it recorded.

Standalone on purpose (standard library only): it runs before and after chroot, where the `remediate`
package may not be importable.

The view: an overlay of the machine's root (lower, read-only) with a per-host upper directory, so every
write the tool or a test makes on the host (Postfix config and queue, /var/backups, /etc/sudoers.d, locks)
is the host's alone; a private /tmp, /run and a minimal private /dev with a /dev/log that this process
serves, writing syslog lines to the host's /var/log/syslog.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True)


def build_root(spec: dict) -> str:
    """Mount the host's view under spec['root'] and return it. Raises CalledProcessError on failure."""
    root, upper, work = spec["root"], spec["upper"], spec["work"]
    _run(["mount", "--make-rprivate", "/"])
    lower = ":".join([*spec.get("layers", []), "/"])   # an MTA's packages over the machine's root
    _run(["mount", "-t", "overlay", "overlay", "-o",
          f"lowerdir={lower},upperdir={upper},workdir={work}", root])
    _run(["mount", "-t", "proc", "proc", f"{root}/proc"])
    _run(["mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", f"{root}/tmp"])
    _run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", f"{root}/run"])
    _run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", f"{root}/dev"])
    for node in DEV_NODES:
        target = f"{root}/dev/{node}"
        open(target, "w").close()  # noqa: SIM115 - a mount point, closed at once
        _run(["mount", "--bind", f"/dev/{node}", target])
    for name, dest in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                       ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(dest, f"{root}/dev/{name}")
    os.makedirs(f"{root}/dev/pts", exist_ok=True)
    os.makedirs(f"{root}/dev/shm", exist_ok=True)
    return root


def serve_syslog(path: str, logfile: str) -> None:
    """Accept syslog datagrams on `path` and append them to `logfile` (in a daemon thread)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o666)

    def pump() -> None:
        with open(logfile, "ab", buffering=0) as out:
            while True:
                data = sock.recv(65536)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S ").encode()
                out.write(stamp + data.rstrip(b"\0\n") + b"\n")

    threading.Thread(target=pump, daemon=True).start()


def start_services(spec: dict) -> None:
    """Start sshd and the MTA inside the chroot; failures are printed, the host stays up for diagnosis."""
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    for argv in spec["start"]:
        proc = subprocess.run(argv, capture_output=True, text=True)
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        print(f"hostinit: {' '.join(argv)}: {status} {proc.stdout.strip()} {proc.stderr.strip()}",
              flush=True)


def main() -> None:
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    root = build_root(spec)
    socket.sethostname(spec["hostname"])
    os.chroot(root)
    os.chdir("/")
    os.makedirs("/var/log", exist_ok=True)
    serve_syslog("/dev/log", "/var/log/syslog")
    start_services(spec)
    print("hostinit: ready", flush=True)
    while True:  # reap orphans (pid 1's job) until killed
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.5)


if __name__ == "__main__":
    main()
