"""The lab's network: one bridge in the root namespace, one network namespace and veth per host.

Nothing here adds a default route, NAT or forwarding: lab hosts reach only the lab's own subnet.
Every command is an argument list (no shell).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

from remediate.errors import LabError


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; raise LabError naming the command when `check` and it fails."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def netns_names() -> set[str]:
    out = ip("-j", "netns", "list", check=False).stdout.strip()
    return {entry["name"] for entry in json.loads(out)} if out else set()


def link_names() -> set[str]:
    out = ip("-j", "link", "show", check=False).stdout.strip()
    return {entry["ifname"] for entry in json.loads(out)} if out else set()


def check_subnet_free(subnet: ipaddress.IPv4Network, bridge: str) -> None:
    """Refuse a subnet that is not private or that overlaps a route the machine already has."""
    if not subnet.is_private:
        raise LabError(f"lab subnet {subnet} is not a private range; choose one inside 10/8, 172.16/12 or "
                       "192.168/16 with --subnet")
    if subnet.prefixlen > 28:
        raise LabError(f"lab subnet {subnet} is too small; use a /24 (or at least a /28)")
    routes = json.loads(ip("-j", "-4", "route", "show", "table", "all", check=False).stdout or "[]")
    for route in routes:
        dst, dev = route.get("dst", ""), route.get("dev", "")
        if dst in ("", "default") or dev == bridge or route.get("type") in ("local", "broadcast"):
            continue
        try:
            other = ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False)
        except ValueError:
            continue
        if subnet.overlaps(other):
            raise LabError(f"lab subnet {subnet} overlaps the machine's route to {dst} on {dev}; "
                           "choose another with --subnet")


def create_bridge(bridge: str, address: str, prefixlen: int) -> None:
    ip("link", "add", bridge, "type", "bridge")
    ip("addr", "add", f"{address}/{prefixlen}", "dev", bridge)
    ip("link", "set", bridge, "up")


def create_host_net(netns: str, veth: str, bridge: str, address: str, prefixlen: int) -> None:
    """A namespace with lo up and eth0 = address/prefixlen, its peer `veth` enslaved to `bridge`."""
    ip("netns", "add", netns)
    ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    ip("link", "set", veth, "master", bridge)
    ip("link", "set", veth, "up")
    ip("-n", netns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0")
    ip("-n", netns, "link", "set", "lo", "up")
    ip("-n", netns, "link", "set", "eth0", "up")


def set_link(veth: str, up: bool) -> None:
    ip("link", "set", veth, "up" if up else "down")


def delete_netns(netns: str) -> None:
    if netns in netns_names():
        ip("netns", "del", netns)


def delete_link(name: str) -> None:
    """Delete a link; one that vanished meanwhile (a veth dies with its namespace) is fine."""
    if name in link_names():
        proc = ip("link", "del", name, check=False)
        if proc.returncode != 0 and "Cannot find device" not in proc.stderr:
            raise LabError(f"`ip link del {name}` failed: {proc.stderr.strip()}")
