"""The command line: parsing, wiring, logging set-up and exit codes (0 ok, 1 attention, 2 bad input).

Nothing imports this package; it imports everything else. The run commands live here; `backups` and
`lab` are sub-applications (`remediate.cli.backups`, `remediate.cli.lab`); what they share (consoles,
the exit-code mapping, confirmation) is in `remediate.cli.common`.
"""

from __future__ import annotations

import fnmatch
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from remediate.cli import backups as backups_cli
from remediate.cli import lab as lab_cli
from remediate.cli.common import (
    Backups,
    Forks,
    Inventory,
    Limit,
    Playbooks,
    ReportOpt,
    Runs,
    Verbose,
    Yes,
    begin,
    confirm,
    err,
    execute,
    exit_code,
    fail,
    load_hosts,
    out,
    setup_logging,
    valid_run_id,
)
from remediate.errors import ConfigError, RemediateError
from remediate.model import Host, HostResult, Plan, RunResult, Status, new_run_id

if TYPE_CHECKING:   # each command imports what it uses when it runs: `--help` loads no SSH or SMTP stack
    from remediate import fleet, orchestrator

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Close open relays and anonymous SMTP AUTH on mail servers: scan, plan, apply, roll back.")
app.add_typer(lab_cli.app, name="lab")
app.add_typer(backups_cli.app, name="backups")


def _version(value: bool) -> None:
    if value:
        from remediate import __version__

        out.print(f"remediate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """Close open relays and anonymous SMTP AUTH on mail servers: scan, plan, apply, roll back."""


def _settings(run_id: str, forks: int, playbooks: Path | None, backups: Path = Path("backups"),
              runs: Path = Path("runs"), break_lock: bool = False) -> orchestrator.Settings:
    from remediate import orchestrator

    return orchestrator.Settings(run_id=run_id, backups=backups, runs=runs, playbooks=playbooks, forks=forks,
                                 break_lock=break_lock)


def _trap_signals(st: orchestrator.Settings) -> None:
    def handler(signum: int, _: Any) -> None:
        if not st.stop.is_set():
            err.print(f"[bold yellow]{signal.Signals(signum).name}[/]: finishing hosts in flight "
                      "(each completes or rolls back); no new host starts")
        st.stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------------- commands
@app.command()
def scan(inventory: Inventory = Path("inventory.yaml"), limit: Limit = None, report_file: ReportOpt = None,
         forks: Forks = 10, playbooks: Playbooks = None, runs: Runs = Path("runs"), verbose: Verbose = False) -> None:
    """Probe every host from here and explain findings from its configuration. Changes nothing."""
    from remediate import orchestrator

    run_id = new_run_id()
    setup_logging(verbose, None)
    hosts = load_hosts(inventory, limit, playbooks)
    begin(verbose, runs, run_id)
    st = _settings(run_id, forks, playbooks, runs=runs)
    execute("scan", hosts, lambda h: orchestrator.scan_host(h, st), st, report_file, ok=frozenset({Status.SECURE}))


class PlanFormat(StrEnum):
    JSON = "json"
    MD = "md"
    HTML = "html"


@app.command()
def plan(inventory: Inventory = Path("inventory.yaml"), limit: Limit = None,
         output: Annotated[Path | None, typer.Option("-o", "--output", help="write the plan here (json: the sealed "
                                                     "plan `apply --plan` takes; md/html: the ticket rendering)")]
         = None,
         fmt: Annotated[PlanFormat, typer.Option("--format", help="json (the plan file), md or html (for a ticket; "
                                                 "stdout without -o)")] = PlanFormat.JSON,
         source: Annotated[Path | None, typer.Option("--from", help="render this plan file instead of planning "
                                                     "(checks its digest; contacts no host)")] = None,
         expires: Annotated[str, typer.Option("--expires", help="how long the plan may be applied: 90s, 30m, 24h, "
                                              "7d")] = "24h",
         sign: Annotated[Path | None, typer.Option("--sign", help="sign the plan with this ed25519 private key "
                                                   "(OpenSSH or PEM, unencrypted)")] = None,
         report_file: ReportOpt = None, forks: Forks = 10, playbooks: Playbooks = None, runs: Runs = Path("runs"),
         verbose: Verbose = False) -> None:
    """Dry run for approval: diff and simulated SMTP verdict per host. Changes nothing on any host."""
    from remediate import orchestrator, planfile, signing

    if source is not None:
        try:
            doc = planfile.read_document(source)
        except ConfigError as exc:
            raise fail(exc) from exc
        _emit_plan(doc, fmt, output)
        return
    try:
        expires_in = planfile.parse_duration(expires)
        if sign is not None:
            signing.load_private(sign)   # an unusable key is bad input: refused before any host is contacted
    except ValueError as exc:
        raise fail(f"--expires: {exc}") from exc
    except ConfigError as exc:
        raise fail(exc) from exc
    run_id = new_run_id()
    setup_logging(verbose, None)
    hosts = load_hosts(inventory, limit, playbooks)
    begin(verbose, runs, run_id)
    st = _settings(run_id, forks, playbooks, runs=runs)

    def write(run: RunResult) -> None:
        doc = planfile.seal(planfile.document(run, inventory, expires_in=expires_in), sign)
        if fmt is not PlanFormat.JSON or output is not None:
            _emit_plan(doc, fmt, output)

    to_stdout = fmt is not PlanFormat.JSON and output is None
    execute("plan", hosts, lambda h: orchestrator.plan_host(h, st), st, report_file, show_diffs=not to_stdout,
            ok=frozenset({Status.WOULD_CHANGE, Status.COMPLIANT}), outputs=(write,), table=err if to_stdout else None)


def _emit_plan(doc: dict[str, Any], fmt: PlanFormat, output: Path | None) -> None:
    """The sealed plan `doc` as `fmt`, to `output` (atomically) or stdout."""
    from remediate import plandoc, planfile

    if fmt is PlanFormat.JSON:
        if output is None:
            sys.stdout.write(planfile.dumps(doc))
        else:
            planfile.write_plan(doc, output)
        return
    text = plandoc.markdown(doc) if fmt is PlanFormat.MD else plandoc.html_page(doc)
    if output is None:
        sys.stdout.write(text)
    else:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(output)


@app.command()
def apply(inventory: Inventory = Path("inventory.yaml"), limit: Limit = None, yes: Yes = False,
          report_file: ReportOpt = None, forks: Forks = 10, playbooks: Playbooks = None,
          backups: Backups = Path("backups"), runs: Runs = Path("runs"),
          break_lock: Annotated[bool, typer.Option("--break-lock", help="break a stale lock of a dead run")]
          = False,
          plan_file: Annotated[Path | None, typer.Option("--plan", help="apply exactly this approved plan "
                                                          "(from `plan -o`); a host that differs is skipped")] = None,
          verify_with: Annotated[Path | None, typer.Option("--verify-with", help="require the plan's signature "
                                                           "by this ed25519 public key")] = None,
          serial: Annotated[str | None, typer.Option("--serial", help="waves as in Ansible: a size, a percentage "
                                                     "or a list (1,10%,100%)")] = None,
          max_fail_percent: Annotated[float | None, typer.Option("--max-fail-percent", min=0, max=100,
                                                                 help="start no new host once more than this "
                                                                 "percentage of the run's hosts failed")] = None,
          pause_after_canary: Annotated[bool, typer.Option("--pause-after-canary", help="show the first wave's "
                                                           "results and ask before the rest")] = False,
          window: Annotated[str | None, typer.Option("--window", help="change window, local time "
                                                     "(22:00-02:00): no wave starts outside it")] = None,
          canary: Annotated[int, typer.Option("--canary", min=0, help="same as --serial K,100%, and any failure "
                                              "among these K stops the run")] = 0,
          max_failures: Annotated[int | None, typer.Option("--max-failures", min=1, help="start no new host "
                                                           "once this many failed, rolled back or were "
                                                           "unreachable")] = None,
          verbose: Verbose = False) -> None:
    """Back up, edit, validate, reload and verify each host; roll back any host that fails."""
    from remediate import orchestrator
    from remediate.journal import Journal, list_runs

    waves = _waves(serial, max_fail_percent, window, canary, max_failures, pause_after_canary, yes)
    run_id = new_run_id()
    setup_logging(verbose, None)
    hosts = load_hosts(inventory, limit, playbooks)
    st = _settings(run_id, forks, playbooks, backups, runs, break_lock)
    hosts = _planned_hosts(st, hosts, plan_file, verify_with, playbooks)
    interrupted = [r for r in list_runs(runs) if r.interrupted]
    if interrupted:
        last = interrupted[-1].run_id
        raise fail(f"run {last} was interrupted (see `remediate status`); roll it back with "
                   f"`remediate rollback --run {last}` or finish it with `remediate resume {last}` before a new apply")
    confirm(yes, "apply changes hosts", f"Apply these changes to {len(hosts)} host(s)?",
            before=None if st.planned is not None else lambda: _show_plan(hosts, st))
    begin(verbose, runs, run_id)
    journal = Journal(runs, run_id)
    journal.start("apply", str(inventory), [h.name for h in hosts])
    _trap_signals(st)
    try:
        execute("apply", hosts, lambda h: orchestrator.apply_host(h, st, journal), st, report_file,
                ok=frozenset({Status.CHANGED, Status.UNCHANGED}), waves=waves, journal=journal)
    finally:
        journal.finish()


def _planned_hosts(st: orchestrator.Settings, hosts: list[Host], plan_file: Path | None, verify_with: Path | None,
                   playbooks: Path | None) -> list[Host]:
    """With `--plan`: the approved plan in `st.planned`, and only its hosts (exit 2 when none is selected)."""
    if plan_file is None:
        if verify_with is not None:
            raise fail("--verify-with checks a plan's signature: use it with --plan")
        return hosts
    st.planned = _approved(plan_file, verify_with, playbooks)
    absent = sorted(set(st.planned.hosts) - {h.name for h in hosts})
    hosts = [h for h in hosts if h.name in st.planned.hosts]
    if not hosts:
        raise fail(f"{plan_file}: none of the selected hosts is in this plan")
    if absent:
        err.print(f"note: approved in {plan_file} but not selected from the inventory, so left alone: "
                  f"{', '.join(absent)}", highlight=False, markup=False)
    return hosts


def _waves(serial: str | None, max_fail_percent: float | None, window: str | None, canary: int,
           max_failures: int | None, pause: bool, yes: bool) -> fleet.Waves:
    """The run's pacing from the options, or exit 2 naming the option (nothing contacted yet)."""
    from remediate import fleet

    if canary and serial is not None:
        raise fail("--canary K is --serial K,100% with no failure allowed in the first wave: give one of them")
    try:
        sizes = fleet.parse_serial(serial) if serial is not None else (str(canary), "100%") if canary else ()
    except ValueError as exc:
        raise fail(f"--serial: {exc}") from exc
    try:
        hours = fleet.Window.parse(window) if window is not None else None
    except ValueError as exc:
        raise fail(f"--window: {exc}") from exc
    if pause and not sizes:
        raise fail("--pause-after-canary needs waves (--serial or --canary)")
    if pause and not yes and not sys.stdin.isatty():
        raise fail("--pause-after-canary asks on a terminal: run it on one, or pass --yes to go on unasked")
    return fleet.Waves(serial=sizes, max_fail_percent=max_fail_percent, max_failures=max_failures,
                       strict_first=bool(canary), window=hours, pause=_ask_after_first_wave if pause and not yes
                       else None)


def _ask_after_first_wave(results: list[HostResult]) -> bool:
    """Show the first wave's results; go on only if the operator says so."""
    from remediate import report

    wave = RunResult("first wave", "apply")
    wave.hosts = list(results)
    report.render(wave, out)
    return typer.confirm("Go on with the next waves?")


def _approved(plan_file: Path, verify_with: Path | None, playbooks: Path | None) -> Plan:
    """The approved plan, intact, unexpired, made with today's drivers; exit 2 (nothing contacted) if not."""
    from remediate import mta
    from remediate.planfile import load_plan

    def digest(driver: str) -> str:
        if not mta.has_driver(driver):
            raise ConfigError(f"the plan names driver {driver!r}, which this version does not have",
                              path=str(plan_file))
        return mta.driver_for(driver, playbooks).digest()

    try:
        return load_plan(plan_file, verify_with=verify_with, driver_digest=digest)
    except ConfigError as exc:
        raise fail(exc) from exc


def _show_plan(hosts: list[Host], st: orchestrator.Settings) -> None:
    from remediate import fleet, orchestrator, report

    run = RunResult(st.run_id, "plan")
    run.hosts = fleet.run_fleet(hosts, lambda h: orchestrator.plan_host(h, st), st.forks, st.stop)
    report.render(run, out, show_diffs=True)


@app.command()
def rollback(inventory: Inventory = Path("inventory.yaml"), limit: Limit = None,
             run: Annotated[str | None, typer.Option("--run", help="run id to undo (default: the latest)")] = None,
             latest: Annotated[bool, typer.Option("--latest", help="undo the latest run (the default)")] = False,
             yes: Yes = False, report_file: ReportOpt = None, forks: Forks = 10, playbooks: Playbooks = None,
             backups: Backups = Path("backups"), runs: Runs = Path("runs"),
             break_lock: Annotated[bool, typer.Option("--break-lock")] = False, verbose: Verbose = False) -> None:
    """Restore the backup of a run (latest by default), validate, reload, and check the MTA answers."""
    from remediate import orchestrator
    from remediate.journal import Journal, list_runs, mark_settled

    if run and latest:
        raise fail("--run and --latest exclude each other")
    if run is not None and not valid_run_id(run):
        raise fail(f"--run {run!r} is not a run id (like 20261128T204700Z-3f9a)")
    run_id = new_run_id()
    setup_logging(verbose, None)
    hosts = load_hosts(inventory, limit, playbooks)
    applies = [s for s in list_runs(runs) if s.command == "apply"]   # read (a damaged journal refused) up front
    confirm(yes, "rollback changes hosts", f"Restore run {run or 'latest'} on {len(hosts)} host(s)?")
    begin(verbose, runs, run_id)
    st = _settings(run_id, forks, playbooks, backups, runs, break_lock)
    journal = Journal(runs, run_id)
    journal.start("rollback", str(inventory), [h.name for h in hosts])
    _trap_signals(st)
    try:
        execute("rollback", hosts, lambda h: orchestrator.rollback_host(h, st, run, journal), st, report_file,
                ok=frozenset({Status.RESTORED, Status.SKIPPED}))
    finally:
        journal.finish()
    # reached only when every host was restored or had nothing to restore
    for state in applies:  # the run undone: the one named, or the newest apply
        if state.interrupted and state.run_id == (run or applies[-1].run_id):
            mark_settled(runs, state.run_id, f"rolled back by {run_id}")


@app.command()
def resume(run_id: Annotated[str, typer.Argument(help="the interrupted run")],
           inventory: Inventory = Path("inventory.yaml"), limit: Limit = None, yes: Yes = False,
           report_file: ReportOpt = None, forks: Forks = 10, playbooks: Playbooks = None,
           backups: Backups = Path("backups"), runs: Runs = Path("runs"), verbose: Verbose = False) -> None:
    """Finish or roll back each host of an interrupted run from its recorded phase."""
    from remediate import orchestrator
    from remediate.journal import Journal, mark_settled, read_journal

    if not valid_run_id(run_id) or not (runs / run_id / "journal.jsonl").is_file():
        raise fail(f"no journal for run {run_id!r} in {runs}/ (`remediate status` lists runs)")
    state = read_journal(runs / run_id / "journal.jsonl")
    if state.live:
        raise fail(f"run {run_id} is still running (pid {state.pid})")
    if state.finished:
        raise fail(f"run {run_id} finished; nothing to resume")
    setup_logging(verbose, None)
    hosts = [h for h in load_hosts(inventory, limit, playbooks) if h.name in state.phases]
    confirm(yes, "resume changes hosts", f"Resume run {run_id} on {len(hosts)} host(s)?")
    begin(verbose, runs, run_id)
    st = _settings(run_id, forks, playbooks, backups, runs)
    journal = Journal(runs, run_id)
    _trap_signals(st)
    execute("resume", hosts, lambda h: orchestrator.resume_host(h, st, run_id, state.phases.get(h.name), journal),
            st, report_file, ok=frozenset({Status.CHANGED, Status.UNCHANGED, Status.SKIPPED}))
    mark_settled(runs, run_id, "resumed")  # only when every host finished or had nothing to do


@app.command()
def hostkeys(inventory: Inventory = Path("inventory.yaml"), limit: Limit = None,
             write: Annotated[bool, typer.Option("--write", help="append UNKNOWN hosts' keys to each host's "
                                                  "known_hosts (never a changed key)")] = False,
             yes: Yes = False) -> None:
    """Show each host's SSH key fingerprint against known_hosts, to verify out of band before first use.

    Exit 0 when every key is known; 1 when any is unknown, changed or unreachable (a changed key is never
    written: it may be an attack)."""
    from rich.table import Table

    from remediate.transport import HostKeyCheck, check_host_key, fingerprint, known_hosts_name

    hosts = load_hosts(inventory, limit)
    checks: dict[str, HostKeyCheck | RemediateError] = {}
    for host in hosts:
        try:
            checks[host.name] = check_host_key(host)
        except RemediateError as exc:
            checks[host.name] = exc
    table = Table("host", "address", "state", "offered key (verify this out of band)", "known_hosts has")
    for host in hosts:
        c = checks[host.name]
        if isinstance(c, RemediateError):
            table.add_row(host.name, host.address, "[red]unreachable[/]", str(c), "")
            continue
        style = {"known": "green", "unknown": "yellow", "changed": "bold red"}[c.state]
        table.add_row(host.name, host.address, f"[{style}]{c.state}[/]",
                      f"{c.key.get_name()} {fingerprint(c.key)}", ", ".join(c.known) or "-")
    out.print(table)
    unknown = [h for h in hosts if isinstance(c := checks[h.name], HostKeyCheck) and c.state == "unknown"]
    if write and unknown:
        confirm(yes, "--write trusts keys", f"Trust the {len(unknown)} unknown key(s) above (checked out of band)?")
        for host in unknown:
            c = checks[host.name]
            assert isinstance(c, HostKeyCheck)
            path = Path(host.connection.known_hosts).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(path, "a") as fh:
                fh.write(f"{known_hosts_name(host)} {c.line}\n")
            out.print(f"{host.name}: added {c.key.get_name()} {fingerprint(c.key)} to {path}")
            checks[host.name] = HostKeyCheck("known", c.key, (fingerprint(c.key),))
    if any(not isinstance(c, HostKeyCheck) or c.state != "known" for c in checks.values()):
        raise typer.Exit(exit_code(False))


@app.command()
def status(inventory: Annotated[Path | None, typer.Option("-i", "--inventory", help="only this inventory's hosts "
                                                          "(default: every host in the journal)")] = None,
           limit: Limit = None, runs: Runs = Path("runs")) -> None:
    """Runs recorded in the journal, and each host's last phase (interrupted runs first). Contacts no host."""
    from remediate.journal import list_runs

    wanted: set[str] | None = None
    if inventory is not None:
        wanted = {h.name for h in load_hosts(inventory, limit)}
    elif limit:
        patterns = [p.strip() for p in limit.split(",") if p.strip()]
        wanted = {h for s in list_runs(runs) for h in s.phases if any(fnmatch.fnmatchcase(h, p) for p in patterns)}
    states = [s for s in list_runs(runs) if wanted is None or set(s.phases) & wanted]
    if not states:
        out.print("no runs recorded" + (" for the selected hosts" if wanted is not None else ""))
        return
    for state in sorted(states, key=lambda s: (not s.interrupted, s.run_id)):
        label = "INTERRUPTED" if state.interrupted else ("running" if state.live else "finished")
        out.print(f"[bold]{state.run_id}[/] {state.command} {label}")
        for host, phase in state.phases.items():
            if wanted is None or host in wanted:
                out.print(f"  {host}: {phase}")


def main() -> None:
    try:
        app()
    except RemediateError as exc:  # anything not mapped closer to its cause
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exit_code(exc))
