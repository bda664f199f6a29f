#!/usr/bin/env python3
"""The floor: the least any remediation tool must do per host, with the same parallelism.

One SSH connection (host key checked against known_hosts), one `postfix reload`, then one SMTP probe
from here (EHLO, MAIL, one foreign RCPT, QUIT). Nothing is backed up, edited, validated or verified:
this is the cost of the round trips and the reload alone, the bound a real tool is measured against.

    python3 bench/floor.py -i INVENTORY [--forks N] [--report FILE]

Reads a remediate inventory (the lab writes one). Exit 0 when every host reloaded and answered SMTP.
"""

from __future__ import annotations

import argparse
import json
import smtplib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from relaycheck import relay_open


@dataclass(frozen=True, slots=True)
class Target:
    """One host of the inventory, as the floor and the Ansible inventory need it."""

    name: str
    address: str
    user: str
    port: int
    identity_file: str
    known_hosts: str
    become: bool


@dataclass(slots=True)
class FloorResult:
    name: str
    address: str
    reload_rc: int | None = None
    relay_open: bool | None = None
    seconds: float = 0.0
    error: str | None = None


def read_inventory(path: str | Path) -> list[Target]:
    """The hosts of a remediate inventory (defaults, then each host's own keys), in file order."""
    from ruamel.yaml import YAML

    doc = YAML(typ="safe").load(Path(path).read_text())
    defaults = doc.get("defaults") or {}
    targets = []
    for name, own in (doc.get("hosts") or {}).items():
        merged = {**defaults, **(own or {})}
        targets.append(Target(name=str(name), address=str(merged["address"]), user=str(merged.get("user", "root")),
                              port=int(merged.get("port", 22)),
                              identity_file=str(Path(str(merged["identity_file"])).expanduser()),
                              known_hosts=str(Path(str(merged["known_hosts"])).expanduser()),
                              become=bool(merged.get("become", False))))
    return targets


def reload_and_probe(target: Target) -> FloorResult:
    """One SSH connection running `postfix reload`, then one SMTP probe."""
    import paramiko

    result = FloorResult(target.name, target.address)
    started = time.perf_counter()
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(target.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(target.address, port=target.port, username=target.user, key_filename=target.identity_file,
                       allow_agent=False, look_for_keys=False, timeout=30)
        command = "sudo -n -- postfix reload" if target.become else "postfix reload"
        _, stdout, _ = client.exec_command(command, timeout=60)
        stdout.read()
        result.reload_rc = stdout.channel.recv_exit_status()
        result.relay_open = relay_open(target.address)
    except (OSError, smtplib.SMTPException, paramiko.SSHException) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--inventory", required=True)
    parser.add_argument("--forks", type=int, default=10, help="hosts worked in parallel (threads)")
    parser.add_argument("--report", help="write the per-host results here (JSON)")
    args = parser.parse_args(argv)
    targets = read_inventory(args.inventory)
    with ThreadPoolExecutor(max_workers=max(1, min(args.forks, len(targets)))) as pool:
        results = list(pool.map(reload_and_probe, targets))
    if args.report:
        Path(args.report).write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    failed = [r for r in results if r.error or r.reload_rc != 0]
    for r in failed:
        print(f"{r.name}: reload rc {r.reload_rc}, {r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
