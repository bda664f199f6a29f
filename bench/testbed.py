"""The benchmark's lab: N open-relay Postfix hosts, reset to the same starting state between runs, and
optionally a WAN-like link (tc netem) on every host's link.

Uses remediate's lab (`remediate.lab.Lab`) with its own state folder, subnet and link-name prefix, so it
leaves other labs on the machine alone. Every host starts in the `open-relay` scenario; `reset` rebuilds a
host's filesystem from scratch (same address and host key), which is the identical starting state.
"""

from __future__ import annotations

import smtplib
import socket
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from floor import read_inventory
from relaycheck import relay_open

SCENARIO = "open-relay"


class Testbed:
    def __init__(self, state_dir: str, subnet: str, prefix: str) -> None:
        from remediate.lab import Lab

        self.state_dir, self.subnet, self.prefix = state_dir, subnet, prefix
        self.lab = Lab(state_dir)
        self.delay_ms = 0

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

    def down(self) -> None:
        """Remove the netem qdiscs this bench added, then the lab (idempotent)."""
        if self.lab.hosts:
            self.set_delay(0)
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

    def reset(self, names: list[str], workers: int = 8) -> None:
        """Rebuild each host in its scenario (parallel), then check every one is an open relay again."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(self.lab.reset, names))
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
        """netem `delay_ms` on both ends of every host's link (bridge-side veth and the host's eth0), so the
        round trip grows by 2 x delay_ms; 0 removes the qdiscs."""
        for h in self.lab.hosts:
            for prefix in ([], ["ip", "netns", "exec", h.netns]):
                dev = "eth0" if prefix else h.veth
                if delay_ms:
                    subprocess.run([*prefix, "tc", "qdisc", "replace", "dev", dev, "root", "netem", "delay",
                                    f"{delay_ms}ms", "limit", "10000"], check=True, capture_output=True)
                else:
                    subprocess.run([*prefix, "tc", "qdisc", "del", "dev", dev, "root"], capture_output=True)
        self.delay_ms = delay_ms

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
