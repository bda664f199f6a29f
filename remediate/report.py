"""Rendering results: the terminal table and recap, plan diffs, and the JSON report file. Text from a host's
configuration goes out `printable` (a byte that was not UTF-8 as `\\xNN`), so no output ever fails to encode."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from remediate.model import OK_STATUSES, HostResult, RunResult, Status, printable

STYLE = {Status.SECURE: "green", Status.COMPLIANT: "green", Status.UNCHANGED: "green",
         Status.CHANGED: "yellow", Status.WOULD_CHANGE: "yellow", Status.RESTORED: "yellow",
         Status.VULNERABLE: "bold red", Status.FAILED: "bold red", Status.ROLLED_BACK: "bold magenta",
         Status.UNREACHABLE: "red", Status.INCONCLUSIVE: "magenta", Status.SKIPPED: "dim"}


def _findings(h: HostResult) -> str:
    codes = sorted({f.code for f in (h.findings_after if h.status in (Status.CHANGED, Status.RESTORED)
                                     else h.findings_before)})
    return ", ".join(codes) or "-"


def _one_line(h: HostResult) -> str:
    """The single most useful sentence about a host, for the table."""
    if h.error:
        text = h.error
    elif h.status in (Status.VULNERABLE, Status.WOULD_CHANGE) and h.findings_before:
        config = [f.text for f in h.findings_before if f.source == "config"]
        text = config[0] if config else h.findings_before[0].text
    else:
        text = (h.notes[0] if h.notes else "") or (h.findings_before[0].text if h.findings_before else "")
    text = printable(text)
    return text if len(text) <= 110 else text[:107] + "..."


def render(run: RunResult, console: Console, *, show_diffs: bool = False,
           ok: frozenset[Status] = OK_STATUSES) -> None:
    """Plan diffs and simulations (when asked), a per-host table, each finding in full, and a recap line."""
    if show_diffs:
        for h in run.hosts:
            if h.diff:
                console.rule(f"[bold]{h.name}[/] ({h.address})")
                console.print(Syntax(printable(h.diff), "diff", theme="ansi_dark", background_color="default"))
            if h.simulation:
                console.print(f"[bold]{h.name}[/] simulated SMTP session against the candidate: "
                              f"{printable(h.simulation)}",
                              highlight=False)
    table = Table(title=f"remediate {run.command}  run {run.run_id}", title_justify="left")
    for col in ("host", "address", "status", "findings", "changed"):
        table.add_column(col, no_wrap=True)
    table.add_column("details", overflow="fold", ratio=1)
    for h in run.hosts:
        table.add_row(h.name, h.address, f"[{STYLE[h.status]}]{h.status.value}[/]", _findings(h),
                      "yes" if h.changed else "no", _one_line(h))
    console.print(table)
    shown = [h for h in run.hosts if h.status in (Status.VULNERABLE, Status.INCONCLUSIVE, Status.FAILED,
                                                 Status.ROLLED_BACK) and (h.findings_before or h.notes)]
    for h in shown:
        console.print(f"[bold]{h.name}[/]:", highlight=False)
        for f in h.findings_before:
            console.print(f"  - {f.code} ({f.source}): {printable(f.text)}", highlight=False, markup=False)
        if h.status is Status.INCONCLUSIVE:
            for note in h.notes:
                console.print(f"  - {printable(note)}", highlight=False, markup=False)
    counts = Counter(h.status.value for h in run.hosts)
    recap = "  ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    verdict = "ok" if all(h.status in ok for h in run.hosts) else "attention needed"
    console.print(f"RECAP {run.command}: {len(run.hosts)} host(s)  {recap}  ({verdict})", highlight=False)
    never = [h for h in run.hosts if h.reason == "not started"]
    if never:
        why = (never[0].error or "").removeprefix("not started: ")
        console.print(f"NOT STARTED: {', '.join(h.name for h in never)} ({why})", highlight=False, markup=False)


def write_json(run: RunResult, path: str | Path) -> None:
    """Write the report atomically; it never holds secrets (results carry none)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(run.as_dict(), indent=2) + "\n")
    os.replace(tmp, path)
