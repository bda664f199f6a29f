"""What every command shares: consoles, option types, logging set-up, the one exit-code mapping, the one
confirmation helper, loading the inventory, and working a fleet with progress and a report."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from remediate.errors import ConfigError, LabSetupError, RemediateError
from remediate.model import OK_STATUSES, Host, HostResult, RunResult, Status

if TYPE_CHECKING:   # the commands import what they use when they run: `--help` loads no SSH or SMTP stack
    from remediate import fleet, orchestrator
    from remediate.journal import Journal

out = Console()
if not out.is_terminal:  # logs and pipes: wide enough for the table, never the 80-column guess
    out = Console(width=140)
err = Console(stderr=True)

EXIT_OK, EXIT_ATTENTION, EXIT_USAGE = 0, 1, 2

Inventory = Annotated[Path, typer.Option("-i", "--inventory", help="inventory file")]
Limit = Annotated[str | None, typer.Option("--limit", help="hosts, groups or globs, comma-separated")]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="write a JSON report here")]
Forks = Annotated[int, typer.Option("--forks", min=1, max=200, help="hosts worked in parallel")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="show info-level logs on stderr")]
Playbooks = Annotated[Path | None, typer.Option("--playbooks", help="playbook directory")]
Backups = Annotated[Path, typer.Option("--backups", help="local backup store")]
Runs = Annotated[Path, typer.Option("--runs", help="run journals and logs")]
RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{4}")


def exit_code(outcome: bool | BaseException) -> int:
    """The exit status for an outcome (README, "Exit status"): 0 when everything asked for succeeded;
    2 for bad input or usage (nothing was contacted or touched); 1 for anything else that needs attention."""
    if isinstance(outcome, ConfigError | LabSetupError):
        return EXIT_USAGE
    if isinstance(outcome, BaseException):
        return EXIT_ATTENTION
    return EXIT_OK if outcome else EXIT_ATTENTION


def fail(problem: str | RemediateError) -> typer.Exit:
    """Print `problem` and return the Exit to raise: a plain message is bad usage (2); an error maps by type."""
    err.print(f"[bold red]error:[/] {escape(str(problem))}", highlight=False)
    return typer.Exit(EXIT_USAGE if isinstance(problem, str) else exit_code(problem))


def confirm(yes: bool, what: str, question: str | Callable[[], str],
            before: Callable[[], None] | None = None) -> None:
    """Go on only when `yes`, or a person on a terminal agrees to `question` (asked after `before` showed
    what would happen). Without a terminal and without --yes: exit 2, `what` saying why."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise fail(f"{what}: run it on a terminal to confirm, or pass --yes")
    if before is not None:
        before()
    if not typer.confirm(question if isinstance(question, str) else question()):
        raise typer.Exit(EXIT_ATTENTION)


def valid_run_id(run: str) -> bool:
    return RUN_ID.fullmatch(run) is not None


def setup_logging(verbose: bool, logfile: Path | None) -> None:
    """structlog once: console lines on a terminal, JSON lines otherwise; every event also to `logfile`."""
    import structlog

    threshold = 20 if verbose else 30
    levels = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50, "exception": 40}
    fh = open(logfile, "a", buffering=1) if logfile else None  # noqa: SIM115 - lives for the run

    def tee(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if fh is not None:
            fh.write(json.dumps(event, default=str) + "\n")
        if levels.get(event.get("level", "info"), 20) < threshold:
            raise structlog.DropEvent
        return event

    renderer: Any = (structlog.dev.ConsoleRenderer(colors=True) if sys.stderr.isatty()
                     else structlog.processors.JSONRenderer())
    structlog.configure(processors=[structlog.processors.add_log_level,
                                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                                    structlog.processors.format_exc_info, tee, renderer],
                        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
                        cache_logger_on_first_use=False)


def begin(verbose: bool, runs: Path, run_id: str) -> None:
    """Logging for a run: stderr, and every event in runs/RUN_ID/log.jsonl."""
    (runs / run_id).mkdir(parents=True, exist_ok=True)
    setup_logging(verbose, runs / run_id / "log.jsonl")


def load_hosts(inventory: Path, limit: str | None, playbooks: Path | None = None) -> list[Host]:
    """Inventory, --limit, and every built driver's playbook and policy for the selected hosts, all
    validated before anything is contacted. Exit 2 naming file, line and key on bad input."""
    from remediate import mta
    from remediate.inventory import load_inventory, select

    try:
        inv = load_inventory(inventory)
        hosts = list(select(inv, limit))
        for host in hosts:
            if not mta.has_driver(host.mta):
                continue   # `auto` is resolved after connecting; an MTA without a driver is skipped then
            pb = mta.driver_for(host.mta, playbooks).playbook
            if host.policy not in pb.policies:
                raise ConfigError(f"playbook {pb.path} has no policy {host.policy!r}", path=str(inventory),
                                  key=f"hosts.{host.name}.policy")
    except ConfigError as exc:
        raise fail(exc) from exc
    return hosts


def execute(command: str, hosts: list[Host], work: Callable[[Host], HostResult], settings: orchestrator.Settings,
            report_path: Path | None, ok: frozenset[Status] = OK_STATUSES, show_diffs: bool = False,
            outputs: tuple[Callable[[RunResult], None], ...] = (), waves: fleet.Waves | None = None,
            journal: Journal | None = None, table: Console | None = None) -> RunResult:
    """Work the fleet (in `waves`) with progress on stderr (hosts done, in flight with their phase from
    `journal`, failures against the budget, the wave), render the table on `table` (default stdout), write
    the report and call each of `outputs`; exit 1 unless every host is `ok`."""
    from remediate import fleet, report
    from remediate.cli.progress import FleetProgress

    run = RunResult(settings.run_id, command)
    with FleetProgress(command, len(hosts), err, lines_when_piped=journal is not None) as progress:
        if journal is not None:
            journal.observer = progress.phase
        if waves is not None and (pause := waves.pause) is not None:
            waves = replace(waves, pause=lambda results: progress.suspended(lambda: pause(results)))
        run.hosts = fleet.run_fleet(hosts, work, settings.forks, settings.stop, waves=waves, observer=progress)
    run.finished = time.time()
    report.render(run, table or out, show_diffs=show_diffs, ok=ok)
    if report_path:
        report.write_json(run, report_path)
    for output in outputs:
        output(run)
    if not run.ok(ok):
        raise typer.Exit(exit_code(False))
    return run
