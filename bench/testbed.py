"""The benchmark's lab: N open-relay Postfix hosts, reset to the same starting state between runs, and
optionally a WAN-like link (tc netem) on every host's link.

Uses remediate's lab (`remediate.lab.Lab`) with its own state folder, subnet and link-name prefix, so it
leaves other labs on the machine alone. Every host starts in the `open-relay` scenario; `reset` rebuilds a
host's filesystem from scratch (same address and host key), which is the identical starting state.
"""

from __future__ import annotations

import hashlib
import smtplib
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from floor import read_inventory
from relaycheck import relay_open

SCENARIO = "open-relay"
STATE_FILES = ("/etc/postfix/main.cf", "/etc/postfix/master.cf", "/var/lib/remediate/lock.json",
               "/var/backups/remediate", "/var/backups/ansible-bench")


class Testbed:
    def __init__(self, state_dir: str, subnet: str, prefix: str) -> None:
        from remediate.lab import Lab

        self.state_dir, self.subnet, self.prefix = state_dir, subnet, prefix
        self.lab = Lab(state_dir)
        self.nfqueue = 94
        self.delay_ms, self.delay_method, self.netem_on = 0, "none", False
        self.delayline: subprocess.Popen[bytes] | None = None
        self.initial: dict[str, dict[str, str | None]] = {}

    @property
    def inventory(self) -> Path:
        return self.lab.inventory_path

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.lab.hosts]

    def up(self, count: int) -> None:
        """A fresh lab of `count` hosts (a lab left in this state folder is taken down first)."""
        self.down()
        from remediate.lab import Lab

        self.lab = Lab(self.state_dir)
        self.lab.up(count, [SCENARIO], subnet=self.subnet, prefix=self.prefix)
        self.initial = {name: self.state(name) for name in self.names}

    def down(self) -> None:
        """Remove the netem qdiscs this bench added, then the lab (idempotent)."""
        self._clear_delay()
        self.lab.down()

    def sub_inventory(self, count: int, path: Path) -> Path:
        """An inventory of the lab's first `count` hosts (same defaults, key and known_hosts)."""
        from ruamel.yaml import YAML

        yaml = YAML(typ="rt")
        doc = yaml.load(self.inventory.read_text())
        for name in list(doc["hosts"])[count:]:
            del doc["hosts"][name]
        with open(path, "w") as fh:
            yaml.dump(doc, fh)
        return path

    def state(self, name: str) -> dict[str, str | None]:
        """What must be identical after a reset: sha256 of main.cf and master.cf, and no trace of a run
        (remediate's host lock and backups, the playbook's backups)."""
        seen: dict[str, str | None] = {}
        for path in STATE_FILES:
            file = self.lab.path(name, path)
            seen[path] = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else (
                "present" if file.exists() else None)
        return seen

    def reset(self, names: list[str], workers: int = 8) -> None:
        """Rebuild each host in its scenario (parallel), then check that each is in its first state (files
        as `up` made them, no trace of a run) and an open relay again."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(self.lab.reset, names))
        now = {n: self.state(n) for n in names}
        drift = {n: seen for n, seen in now.items() if seen != self.initial[n]}
        if drift:
            raise RuntimeError(f"after reset these hosts differ from their first state: {drift}")
        still = self.relay_states(names)
        closed = [n for n, is_open in still.items() if is_open is not True]
        if closed:
            raise RuntimeError(f"after reset these hosts are not open relays: {closed} ({still})")

    def relay_states(self, names: list[str]) -> dict[str, bool | None]:
        """Each host's answer to one foreign RCPT from here (None: could not ask)."""
        addresses = {h.name: h.address for h in self.lab.hosts}

        def ask(name: str) -> bool | None:
            try:
                return relay_open(addresses[name])
            except (OSError, smtplib.SMTPException):
                return None

        with ThreadPoolExecutor(max_workers=16) as pool:
            return dict(zip(names, pool.map(ask, names), strict=True))

    # ----------------------------------------------------------------- the link
    def set_delay(self, delay_ms: int) -> None:
        """Add `delay_ms` in each direction between this machine and every lab host (the round trip grows
        by 2 x delay_ms); 0 removes it. With tc netem: a netem qdisc on both ends of every host's link (the
        bridge-side veth and the host's eth0). Without netem in the kernel: iptables sends the lab's traffic
        in both directions (OUTPUT to the bridge, INPUT from it) through an NFQUEUE delay line
        (bench/delayline.py)."""
        self._clear_delay()
        if not delay_ms:
            return
        if self._netem(delay_ms):
            self.delay_method = "tc netem on both ends of each host's veth"
        else:
            self._start_delayline(delay_ms)
            self.delay_method = "NFQUEUE delay line (bench/delayline.py; this kernel has no netem)"
        self.delay_ms = delay_ms

    def _netem(self, delay_ms: int) -> bool:
        for h in self.lab.hosts:
            for prefix, dev in (([], h.veth), (["ip", "netns", "exec", h.netns], "eth0")):
                proc = subprocess.run([*prefix, "tc", "qdisc", "replace", "dev", dev, "root", "netem", "delay",
                                       f"{delay_ms}ms", "limit", "10000"], capture_output=True, text=True)
                if proc.returncode:
                    if "unknown" in proc.stderr and h is self.lab.hosts[0] and not prefix:
                        return False
                    raise RuntimeError(f"tc netem on {dev}: {proc.stderr.strip()}")
        self.netem_on = True
        return True

    def _rules(self) -> list[list[str]]:
        q = ["-j", "NFQUEUE", "--queue-num", str(self.nfqueue), "--queue-bypass"]
        return [["OUTPUT", "-o", self.lab.bridge, "-d", self.subnet, *q],
                ["INPUT", "-i", self.lab.bridge, "-s", self.subnet, *q]]

    def _start_delayline(self, delay_ms: int) -> None:
        ready = Path(self.state_dir) / "delayline.ready"
        ready.unlink(missing_ok=True)
        self.delayline = subprocess.Popen([sys.executable, str(Path(__file__).with_name("delayline.py")),
                                           "--queue", str(self.nfqueue), "--delay-ms", str(delay_ms),
                                           "--ready", str(ready)], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not ready.exists():
            if self.delayline.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the delay line did not start (is NFQUEUE in this kernel?)")
            time.sleep(0.05)
        for rule in self._rules():
            subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)

    def check_delay(self) -> None:
        """Raise when the delay line died (its --queue-bypass rules would pass packets undelayed)."""
        if self.delayline is not None and self.delayline.poll() is not None:
            raise RuntimeError(f"the delay line exited ({self.delayline.returncode}): the link is not delayed")

    def _clear_delay(self) -> None:
        if self.netem_on:
            for h in self.lab.hosts:
                subprocess.run(["tc", "qdisc", "del", "dev", h.veth, "root"], capture_output=True)
                subprocess.run(["ip", "netns", "exec", h.netns, "tc", "qdisc", "del", "dev", "eth0", "root"],
                               capture_output=True)
            self.netem_on = False
        if self.lab.hosts:   # a rule left by a crashed run is removed too
            for rule in self._rules():
                while subprocess.run(["iptables", "-D", *rule], capture_output=True).returncode == 0:
                    pass
        if self.delayline is not None:
            time.sleep(2 * self.delay_ms / 1000 + 0.2)   # let the packets it holds go first
            self.delayline.terminate()
            self.delayline.wait(timeout=10)
            self.delayline = None
        self.delay_ms, self.delay_method = 0, "none"

    def rtt_ms(self, samples: int = 7) -> float:
        """Median TCP connect time to the first host's sshd (one SYN / SYN-ACK round trip), in ms."""
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            with socket.create_connection((self.lab.hosts[0].address, 22), timeout=10):
                times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)


def addresses(inventory: Path) -> dict[str, str]:
    return {t.name: t.address for t in read_inventory(inventory)}
