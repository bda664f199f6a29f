"""`remediate lab ...`: a lab of real mail hosts (sshd + an MTA) in namespaces on this machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from remediate.cli.common import fail, out
from remediate.errors import LabError
from remediate.lab.mtas import DEFAULT_MTA, MTAS

app = typer.Typer(no_args_is_help=True, help="A lab of real mail hosts (sshd + an MTA) in namespaces.")
LabState = Annotated[Path, typer.Option("--state-dir", help="the lab's state folder")]


def _lab(state_dir: Path) -> Any:
    from remediate.lab import Lab

    return Lab(state_dir)


@app.command("up")
def lab_up(hosts: Annotated[int | None, typer.Option("--hosts", help="number of hosts (default 3)")] = None,
           scenario: Annotated[list[str] | None, typer.Option("--scenario", help="scenario per host, cycled; "
                                                                "repeat or comma-separate; 'all' = every one")]
           = None,
           inventory_out: Annotated[Path | None, typer.Option("--inventory-out", help="also write the "
                                                                "inventory here")] = None,
           subnet: Annotated[str, typer.Option("--subnet")] = "10.99.0.0/24",
           mta: Annotated[list[str] | None, typer.Option("--mta", help=f"{', '.join(MTAS)} (repeat or "
                                                          "comma-separate); with --scenario all: every scenario "
                                                          f"of each; default {DEFAULT_MTA}")] = None,
           state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Start lab hosts and write an inventory for them."""
    from remediate.lab.fault_scenarios import FAULT_SCENARIOS
    from remediate.lab.scenarios import DEFAULT_SCENARIOS, scenarios_of

    kinds = [m for item in (mta or [DEFAULT_MTA]) for m in item.split(",") if m]
    unknown = [m for m in kinds if m not in MTAS]
    if unknown:
        raise fail(f"--mta {unknown[0]}: the lab runs {', '.join(MTAS)}")
    names = [s for item in (scenario or []) for s in item.split(",") if s]
    if names == ["all"]:
        names = [name for kind in kinds for name in scenarios_of(kind) if name not in FAULT_SCENARIOS]
    elif not names and mta:
        names = [DEFAULT_SCENARIOS[kind] for kind in kinds]
    count = hosts or (len(names) if names else 3)
    lab = _lab(state_dir)
    started = time.monotonic()
    try:
        lab.up(count, names or None, subnet=subnet)
        if inventory_out:
            lab.write_inventory(inventory_out)
    except LabError as exc:
        raise fail(exc) from exc
    _lab_table(lab)
    out.print(f"lab up: {count} host(s) in {time.monotonic() - started:.1f}s; inventory: "
              f"{inventory_out or lab.inventory_path}")


@app.command("down")
def lab_down(state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Stop every lab process, delete its namespaces, links and state folder (safe to repeat)."""
    _lab(state_dir).down()
    out.print("lab down")


@app.command("status")
def lab_status(state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Hosts, addresses, scenarios, and whether sshd and the MTA answer."""
    lab = _lab(state_dir)
    if not lab.hosts:
        out.print("no lab is up")
        return
    _lab_table(lab)


def _lab_table(lab: Any) -> None:
    from rich.table import Table

    table = Table("host", "address", "scenario", "user", "sshd", "mta")
    for row in lab.status():
        table.add_row(str(row["name"]), str(row["address"]), str(row["scenario"]), str(row["user"]),
                      "up" if row["sshd"] else "[red]down[/]", "up" if row["mta"] else "[red]down[/]")
    out.print(table)


def _lab_op(state_dir: Path, fn: str, *args: str) -> None:
    try:
        getattr(_lab(state_dir), fn)(*args)
    except LabError as exc:
        raise fail(exc) from exc


@app.command("cut")
def lab_cut(host: str, state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Cut a host's network link."""
    _lab_op(state_dir, "cut", host)


@app.command("restore")
def lab_restore(host: str, state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Restore a host's network link."""
    _lab_op(state_dir, "restore", host)


@app.command("stop")
def lab_stop(host: str, service: Annotated[str, typer.Argument(help="sshd or mta")],
             state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Stop a host's sshd or MTA."""
    _lab_op(state_dir, "service", host, service, "stop")


@app.command("start")
def lab_start(host: str, service: Annotated[str, typer.Argument(help="sshd or mta")],
              state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Start a host's sshd or MTA."""
    _lab_op(state_dir, "service", host, service, "start")


@app.command("reset")
def lab_reset(host: str, state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Rebuild a host from scratch in its scenario."""
    _lab_op(state_dir, "reset", host)
