"""The command line: parsing, wiring, logging set-up and exit codes (0 ok, 1 attention, 2 bad input).

Nothing imports this module; it imports everything else.
"""

from __future__ import annotations

import fnmatch
import json
import signal
import sys
import time
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from remediate import backups as housekeeping
from remediate import orchestrator, report
from remediate.backups import Inspection, PruneResult, referenced_runs, valid_run_id
from remediate.errors import ConfigError, LabError, RemediateError
from remediate.inventory import load_inventory, select
from remediate.journal import Journal, RunState, list_runs
from remediate.playbook import playbook_for
from remediate.results import OK_STATUSES, RunResult, Status, new_run_id

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Close open relays and anonymous SMTP AUTH on mail servers: scan, plan, apply, roll back.")
lab_app = typer.Typer(no_args_is_help=True, help="A lab of real mail hosts (sshd + Postfix) in namespaces.")
app.add_typer(lab_app, name="lab")
out = Console()
if not out.is_terminal:  # logs and pipes: wide enough for the table, never the 80-column guess
    out = Console(width=140)
err = Console(stderr=True)

Inventory = Annotated[Path, typer.Option("-i", "--inventory", help="inventory file")]
Limit = Annotated[str | None, typer.Option("--limit", help="hosts, groups or globs, comma-separated")]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="write a JSON report here")]
Forks = Annotated[int, typer.Option("--forks", min=1, max=200, help="hosts worked in parallel")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="show info-level logs on stderr")]
Playbooks = Annotated[Path | None, typer.Option("--playbooks", help="playbook directory")]
Backups = Annotated[Path, typer.Option("--backups", help="local backup store")]
Runs = Annotated[Path, typer.Option("--runs", help="run journals and logs")]


# ---------------------------------------------------------------------- logging
def _version(value: bool) -> None:
    if value:
        from remediate import __version__

        out.print(f"remediate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """Close open relays and anonymous SMTP AUTH on mail servers: scan, plan, apply, roll back."""


def setup_logging(verbose: bool, logfile: Path | None) -> None:
    """structlog once: console lines on a terminal, JSON lines otherwise; every event also to `logfile`."""
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


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def load_hosts(inventory: Path, limit: str | None, playbooks: Path | None) -> list[Any]:
    """Inventory, --limit and every host's playbook/policy, all validated before anything is contacted."""
    inv = load_inventory(inventory)
    hosts = list(select(inv, limit))
    for host in hosts:
        pb = playbook_for(host.mta, playbooks)
        if host.policy not in pb.policies:
            raise ConfigError(f"playbook {pb.path} has no policy {host.policy!r}", path=str(inventory),
                              key=f"hosts.{host.name}.policy")
    return hosts


def execute(command: str, hosts: list[Any], work: Any, settings: orchestrator.Settings,
            report_path: Path | None, ok: frozenset[Status] = OK_STATUSES, show_diffs: bool = False,
            extra_outputs: tuple[Path, ...] = ()) -> RunResult:
    """Work the fleet with progress on stderr, render, write reports; exit 1 unless every host is `ok`."""
    run = RunResult(settings.run_id, command)
    with Progress(TextColumn(f"{command}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(command, total=len(hosts))
        run.hosts = orchestrator.run_fleet(hosts, work, settings.forks, settings.stop,
                                           on_done=lambda _: progress.advance(task), canary=settings.canary,
                                           max_failures=settings.max_failures)
    run.finished = time.time()
    report.render(run, out, show_diffs=show_diffs, ok=ok)
    for path in (report_path, *extra_outputs):
        if path:
            report.write_json(run, path)
    if not all(h.status in ok for h in run.hosts):
        raise typer.Exit(1)
    return run


def settings_for(run_id: str, forks: int, playbooks: Path | None, backups: Path, runs: Path,
                 break_lock: bool = False) -> orchestrator.Settings:
    return orchestrator.Settings(run_id=run_id, backups=backups, runs=runs, playbooks=playbooks, forks=forks,
                                 break_lock=break_lock)


def _begin(verbose: bool, runs: Path, run_id: str, with_log: bool = True) -> None:
    logfile = None
    if with_log:
        (runs / run_id).mkdir(parents=True, exist_ok=True)
        logfile = runs / run_id / "log.jsonl"
    setup_logging(verbose, logfile)


# ---------------------------------------------------------------------- commands
@app.command()
def scan(inventory: Inventory = Path("inventory.yaml"), limit: Limit = None, report_file: ReportOpt = None,
         forks: Forks = 10, playbooks: Playbooks = None, runs: Runs = Path("runs"), verbose: Verbose = False) -> None:
    """Probe every host from here and explain findings from its configuration. Changes nothing."""
    run_id = new_run_id()
    setup_logging(verbose, None)
    hosts = _load_or_exit(inventory, limit, playbooks)
    _begin(verbose, runs, run_id)
    st = settings_for(run_id, forks, playbooks, Path("backups"), runs)
    execute("scan", hosts, lambda h: orchestrator.scan_host(h, st), st, report_file,
            ok=frozenset({Status.SECURE}))


@app.command()
def plan(inventory: Inventory = Path("inventory.yaml"), limit: Limit = None,
         output: Annotated[Path | None, typer.Option("-o", "--output", help="write the plan (JSON) here")] = None,
         report_file: ReportOpt = None, forks: Forks = 10, playbooks: Playbooks = None, runs: Runs = Path("runs"),
         verbose: Verbose = False) -> None:
    """Dry run for approval: diff and simulated SMTP verdict per host. Changes nothing on any host."""
    run_id = new_run_id()
    setup_logging(verbose, None)
    hosts = _load_or_exit(inventory, limit, playbooks)
    _begin(verbose, runs, run_id)
    st = settings_for(run_id, forks, playbooks, Path("backups"), runs)
    execute("plan", hosts, lambda h: orchestrator.plan_host(h, st), st, report_file, show_diffs=True,
            ok=frozenset({Status.WOULD_CHANGE, Status.COMPLIANT}), extra_outputs=(output,) if output else ())


@app.command()
def apply(inventory: Inventory = Path("inventory.yaml"), limit: Limit = None, yes: Yes = False,
          report_file: ReportOpt = None, forks: Forks = 10, playbooks: Playbooks = None,
          backups: Backups = Path("backups"), runs: Runs = Path("runs"),
          break_lock: Annotated[bool, typer.Option("--break-lock", help="break a stale lock of a dead run")]
          = False,
          plan_file: Annotated[Path | None, typer.Option("--plan", help="apply exactly this approved plan "
                                                          "(from `plan -o`); refused per host if stale")] = None,
          canary: Annotated[int, typer.Option("--canary", min=0, help="work this many hosts first, alone; "
                                              "the rest only if they all succeed")] = 0,
          max_failures: Annotated[int | None, typer.Option("--max-failures", min=1, help="start no new host "
                                                           "once this many failed, rolled back or were "
                                                           "unreachable")] = None,
          verbose: Verbose = False) -> None:
    """Back up, edit, validate, reload and verify each host; roll back any host that fails."""
    run_id = new_run_id()
    setup_logging(verbose, None)
    hosts = _load_or_exit(inventory, limit, playbooks)
    planned = _load_plan(plan_file) if plan_file else None
    if planned is not None:
        hosts = [h for h in hosts if h.name in planned]
        if not hosts:
            raise fail(f"{plan_file}: none of the selected hosts is in this plan")
    interrupted = [r for r in list_runs(runs) if r.interrupted]
    if interrupted:
        raise fail(f"run {interrupted[-1].run_id} was interrupted (see `remediate status`); roll it back with "
                   f"`remediate rollback --run {interrupted[-1].run_id}` or finish it with "
                   f"`remediate resume {interrupted[-1].run_id}` before a new apply")
    st = settings_for(run_id, forks, playbooks, backups, runs, break_lock)
    st.planned, st.canary, st.max_failures = planned, canary, max_failures
    if not yes:
        if not sys.stdin.isatty():
            raise fail("apply changes hosts: run it on a terminal to confirm, or pass --yes")
        if planned is None:
            _show_plan(hosts, st)
        if not typer.confirm(f"Apply these changes to {len(hosts)} host(s)?"):
            raise typer.Exit(1)
    _begin(verbose, runs, run_id)
    journal = Journal(runs, run_id)
    journal.start("apply", str(inventory), [h.name for h in hosts])
    _trap_signals(st)
    try:
        execute("apply", hosts, lambda h: orchestrator.apply_host(h, st, journal), st, report_file,
                ok=frozenset({Status.CHANGED, Status.UNCHANGED}))
    finally:
        journal.finish()


@app.command()
def rollback(inventory: Inventory = Path("inventory.yaml"), limit: Limit = None,
             run: Annotated[str | None, typer.Option("--run", help="run id to undo (default: the latest)")] = None,
             latest: Annotated[bool, typer.Option("--latest", help="undo the latest run (the default)")] = False,
             yes: Yes = False, report_file: ReportOpt = None, forks: Forks = 10, playbooks: Playbooks = None,
             backups: Backups = Path("backups"), runs: Runs = Path("runs"),
             break_lock: Annotated[bool, typer.Option("--break-lock")] = False, verbose: Verbose = False) -> None:
    """Restore the backup of a run (latest by default), validate, reload, and check the MTA answers."""
    if run and latest:
        raise fail("--run and --latest exclude each other")
    if run is not None and not _valid_run_id(run):
        raise fail(f"--run {run!r} is not a run id (like 20261128T204700Z-3f9a)")
    run_id = new_run_id()
    setup_logging(verbose, None)
    hosts = _load_or_exit(inventory, limit, playbooks)
    if not yes:
        if not sys.stdin.isatty():
            raise fail("rollback changes hosts: run it on a terminal to confirm, or pass --yes")
        if not typer.confirm(f"Restore run {run or 'latest'} on {len(hosts)} host(s)?"):
            raise typer.Exit(1)
    _begin(verbose, runs, run_id)
    st = settings_for(run_id, forks, playbooks, backups, runs, break_lock)
    journal = Journal(runs, run_id)
    journal.start("rollback", str(inventory), [h.name for h in hosts])
    _trap_signals(st)
    try:
        execute("rollback", hosts, lambda h: orchestrator.rollback_host(h, st, run, journal), st, report_file,
                ok=frozenset({Status.RESTORED, Status.SKIPPED}))
    finally:
        journal.finish()
    # reached only when every host was restored or had nothing to restore
    from remediate.journal import mark_settled
    applies = [s for s in list_runs(runs) if s.command == "apply"]
    for state in applies:  # the run undone: the one named, or the newest apply
        if state.interrupted and state.run_id == (run or applies[-1].run_id):
            mark_settled(runs, state.run_id, f"rolled back by {run_id}")


@app.command()
def resume(run_id: Annotated[str, typer.Argument(help="the interrupted run")],
           inventory: Inventory = Path("inventory.yaml"), limit: Limit = None, yes: Yes = False,
           report_file: ReportOpt = None, forks: Forks = 10, playbooks: Playbooks = None,
           backups: Backups = Path("backups"), runs: Runs = Path("runs"), verbose: Verbose = False) -> None:
    """Finish or roll back each host of an interrupted run from its recorded phase."""
    from remediate.journal import mark_settled, read_journal

    if not _valid_run_id(run_id) or not (runs / run_id / "journal.jsonl").is_file():
        raise fail(f"no journal for run {run_id!r} in {runs}/ (`remediate status` lists runs)")
    state = read_journal(runs / run_id / "journal.jsonl")
    if state.live:
        raise fail(f"run {run_id} is still running (pid {state.pid})")
    if state.finished:
        raise fail(f"run {run_id} finished; nothing to resume")
    setup_logging(verbose, None)
    hosts = [h for h in _load_or_exit(inventory, limit, playbooks) if h.name in state.phases]
    if not yes and not sys.stdin.isatty():
        raise fail("resume changes hosts: run it on a terminal to confirm, or pass --yes")
    if not yes and not typer.confirm(f"Resume run {run_id} on {len(hosts)} host(s)?"):
        raise typer.Exit(1)
    _begin(verbose, runs, run_id)
    st = settings_for(run_id, forks, playbooks, backups, runs)
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

    from remediate.transport import check_host_key, fingerprint

    hosts = _load_or_exit(inventory, limit, None)
    checks: dict[str, Any] = {}
    for host in hosts:
        try:
            checks[host.name] = check_host_key(host)
        except RemediateError as exc:
            checks[host.name] = exc
    table = Table("host", "address", "state", "offered key (verify this out of band)", "known_hosts has")
    for host in hosts:
        c = checks[host.name]
        if isinstance(c, Exception):
            table.add_row(host.name, host.address, "[red]unreachable[/]", str(c), "")
            continue
        style = {"known": "green", "unknown": "yellow", "changed": "bold red"}[c.state]
        table.add_row(host.name, host.address, f"[{style}]{c.state}[/]",
                      f"{c.key.get_name()} {fingerprint(c.key)}", ", ".join(c.known) or "-")
    out.print(table)
    unknown = [h for h in hosts if not isinstance(checks[h.name], Exception) and checks[h.name].state == "unknown"]
    if write and unknown:
        if not yes:
            if not sys.stdin.isatty():
                raise fail("--write trusts keys: run it on a terminal to confirm, or pass --yes")
            if not typer.confirm(f"Trust the {len(unknown)} unknown key(s) above (checked out of band)?"):
                raise typer.Exit(1)
        for host in unknown:
            c = checks[host.name]
            name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
            path = Path(host.known_hosts).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(path, "a") as fh:
                fh.write(f"{name} {c.line}\n")
            out.print(f"{host.name}: added {c.key.get_name()} {fingerprint(c.key)} to {path}")
            checks[host.name] = type(c)("known", c.key, (fingerprint(c.key),))
    if any(isinstance(c, Exception) or c.state != "known" for c in checks.values()):
        raise typer.Exit(1)


@app.command()
def status(runs: Runs = Path("runs")) -> None:
    """Runs recorded in the journal, and each host's last phase (interrupted runs first)."""
    states = list_runs(runs)
    if not states:
        out.print("no runs recorded")
        return
    for state in sorted(states, key=lambda s: (not s.interrupted, s.run_id)):
        label = "INTERRUPTED" if state.interrupted else ("running" if state.live else "finished")
        out.print(f"[bold]{state.run_id}[/] {state.command} {label}")
        for host, phase in state.phases.items():
            out.print(f"  {host}: {phase}")


def _show_plan(hosts: list[Any], st: orchestrator.Settings) -> None:
    run = RunResult(st.run_id, "plan")
    run.hosts = orchestrator.run_fleet(hosts, lambda h: orchestrator.plan_host(h, st), st.forks, st.stop)
    report.render(run, out, show_diffs=True)


def _load_plan(path: Path) -> dict[str, dict[str, Any]]:
    """The approved plan's hosts by name; exit 2 when the file is not a plan made by `plan -o`."""
    try:
        data = json.loads(path.read_text())
        if data.get("command") != "plan":
            raise ValueError("not written by `remediate plan -o`")
        hosts = {h["name"]: h for h in data["hosts"] if h.get("pre_images")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise fail(f"{path}: not a usable plan file: {exc}") from exc
    return hosts


def _trap_signals(st: orchestrator.Settings) -> None:
    def handler(signum: int, _: Any) -> None:
        if not st.stop.is_set():
            err.print(f"[bold yellow]{signal.Signals(signum).name}[/]: finishing hosts in flight "
                      "(each completes or rolls back); no new host starts")
        st.stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _valid_run_id(run: str) -> bool:
    import re

    return re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", run) is not None


def _load_or_exit(inventory: Path, limit: str | None, playbooks: Path | None) -> list[Any]:
    try:
        return load_hosts(inventory, limit, playbooks)
    except ConfigError as exc:
        raise fail(str(exc)) from exc


# ---------------------------------------------------------------------- backups
backups_app = typer.Typer(no_args_is_help=True, help="The backup store: list runs, check both copies, prune old runs.")
app.add_typer(backups_app, name="backups")
RunIdArg = Annotated[str, typer.Argument(metavar="RUN_ID", help="a run id, like 20261128T204700Z-3f9a")]


def _inventory_hosts(inventory: Path, limit: str | None) -> list[Any]:
    """The inventory's hosts selected by --limit (no playbook needed: backups are plain files)."""
    try:
        return list(select(load_inventory(inventory), limit))
    except ConfigError as exc:
        raise fail(str(exc)) from exc


def _each_host(hosts: list[Any], forks: int, work: Any) -> list[Any]:
    """`work(host)` for every host, `forks` at a time, in inventory order."""
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        return list(pool.map(work, hosts))


def _say(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)


def _journal_word(state: RunState | None, host: str) -> str:
    """The run's journal on `host`: its last phase, or interrupted / running, or 'no journal'."""
    if state is None:
        return "no journal"
    phase = state.phases.get(host, "not journalled")
    if state.interrupted:
        return f"interrupted (last phase {phase})"
    if phase == "done" and state.outcomes.get(host) not in (None, "verified", "restored"):
        phase = f"done ({state.outcomes[host]})"   # e.g. done (rolled_back)
    return f"running ({phase})" if state.live else phase


@backups_app.command("list")
def backups_list(inventory: Annotated[Path | None, typer.Option("-i", "--inventory", help="only this inventory's "
                                                                "hosts (default: every host in the store)")] = None,
                 limit: Limit = None, backups: Backups = Path("backups"), runs: Runs = Path("runs")) -> None:
    """Runs in the local backup store per host: when, which files, and what the run's journal says.
    Contacts no host."""
    store = housekeeping.Backups(backups)
    pairs = sorted(store.runs())  # by host, then oldest run first
    if inventory is not None:
        wanted = {h.name for h in _inventory_hosts(inventory, limit)}
        pairs = [p for p in pairs if p[0] in wanted]
    elif limit:
        patterns = [p.strip() for p in limit.split(",") if p.strip()]
        pairs = [p for p in pairs if any(fnmatch.fnmatchcase(p[0], pat) for pat in patterns)]
    if not pairs:
        _say(f"no backups in {backups}/" + (" for the selected hosts" if inventory or limit else ""))
        return
    journals = {s.run_id: s for s in list_runs(runs)}
    table = Table(title=f"backups in {backups}/", title_justify="left")
    for column in ("host", "run", "created", "files", "state"):
        table.add_column(column, no_wrap=column == "run", overflow="fold")
    for host, run_id in pairs:
        try:
            manifest = store.local_manifest(host, run_id)
        except (RemediateError, OSError) as exc:
            table.add_row(host, run_id, "?", f"[red]manifest unreadable[/]: {escape(str(exc))}", "")
            continue
        assert manifest is not None  # runs() lists only folders with a manifest
        files = f"{len(manifest.files)}: " + ", ".join(f.path for f in manifest.files)
        table.add_row(host, run_id, manifest.created, files, _journal_word(journals.get(run_id), host))
    # on a terminal, fit it; in a pipe or file, one line per run (whole paths, greppable)
    wide = Measurement.get(out, out.options.update_width(10_000), table).maximum
    (out if out.is_terminal else Console(file=out.file, width=wide)).print(table)


@backups_app.command("show")
def backups_show(run_id: RunIdArg, inventory: Inventory = Path("inventory.yaml"), limit: Limit = None,
                 backups: Backups = Path("backups"), forks: Forks = 10) -> None:
    """A run's manifest per host and whether each file's local and host copies are present and intact.
    Reads only (connects to the hosts for their copies). Exit 0 only when every copy is intact."""
    if not valid_run_id(run_id):
        raise fail(f"{run_id!r} is not a run id (like 20261128T204700Z-3f9a; `remediate backups list` shows them)")
    hosts = _inventory_hosts(inventory, limit)
    store = housekeeping.Backups(backups)
    views = _each_host(hosts, forks, lambda h: store.inspect_host(h, run_id))
    for view in views:
        _show_inspection(view)
    found = [v for v in views if v.manifest is not None]
    bad = [v for v in views if not v.ok]
    copies = sum(len(v.copies) for v in views)
    verdict = "ok" if found and not bad else "attention needed"
    if not found and not bad:
        _say(f"no backup of run {run_id} on any selected host, locally or on the host")
    _say(f"RECAP backups show {run_id}: {len(found)} of {len(hosts)} host(s) have this run, {copies} file(s) "
         f"checked, {len(bad)} host(s) with a missing, corrupt or unchecked copy ({verdict})")
    if verdict != "ok":
        raise typer.Exit(1)


def _show_inspection(view: Inspection) -> None:
    if view.manifest is None and not view.problems:
        _say(f"{view.host}: no backup of run {view.run_id} (locally or on the host)")
        return
    _say(f"{view.host}: run {view.run_id}" + (f" (manifest from the {view.source})" if view.source else ""))
    if view.manifest is not None:
        m = view.manifest
        for label, value in (("host", f"{m.host} ({m.address})"), ("host key", m.host_key or "not recorded"),
                             ("tool", f"remediate {m.tool_version}"), ("playbook", m.playbook),
                             ("created", m.created)):
            _say(f"  {label:<9} {value}")
    for c in view.copies:
        r = c.record
        mtime = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.mtime))
        _say(f"  file      {r.path}\n    sha256 {r.sha256}\n    size {r.size}  mode {r.mode:04o}  "
             f"owner {r.owner or r.uid}:{r.group or r.gid}  mtime {mtime}\n"
             f"    local copy: {c.local.describe()}\n    host copy:  {c.host.describe()}")
    for problem in view.problems:
        _say(f"  problem: {problem}")


@backups_app.command("prune")
def backups_prune(keep: Annotated[int, typer.Option("--keep", help="runs kept per host, newest first (at least 1)")],
                  inventory: Inventory = Path("inventory.yaml"), limit: Limit = None,
                  backups: Backups = Path("backups"), runs: Runs = Path("runs"), yes: Yes = False,
                  forks: Forks = 10) -> None:
    """Per host, delete all but the newest KEEP runs' backups, locally and on the host. Never the newest,
    never a run that an unfinished (live or interrupted) run is or refers to."""
    if keep < 1:
        raise fail(f"--keep {keep}: keep at least 1 run per host (the newest backup is never removed)")
    hosts = _inventory_hosts(inventory, limit)
    if not yes and not sys.stdin.isatty():
        raise fail("prune deletes backups: run it on a terminal to confirm, or pass --yes")
    store = housekeeping.Backups(backups)
    confirmed: dict[str, tuple[str, ...]] | None = None
    if not yes:
        protected = _protected_runs(runs)
        planned = _each_host(hosts, forks, lambda h: store.prune_host(h, keep, protected, dry_run=True))
        _show_prune(planned, planned=True)
        confirmed = {p.host: p.plan.remove for p in planned if p.plan and p.plan.remove}
        if not confirmed:
            raise typer.Exit(1 if any(p.error for p in planned) else 0)
        if not typer.confirm(f"Delete {sum(map(len, confirmed.values()))} backup(s) on these hosts and in "
                             f"{backups}/?"):
            raise typer.Exit(1)
    protected = _protected_runs(runs)  # afresh: a run may have started while someone read the plan
    results = _each_host(hosts, forks, lambda h: store.prune_host(
        h, keep, protected, None if confirmed is None else confirmed.get(h.name, ())))
    _show_prune(results)
    if any(r.error for r in results):
        raise typer.Exit(1)


def _protected_runs(runs: Path) -> frozenset[str]:
    """Runs prune must keep, from the journals; exits 1 while a run that may restore an old backup is live."""
    states = list_runs(runs)
    busy = [s for s in states if s.live and s.command != "apply"]
    if busy:  # a live rollback may be about to restore a run its journal does not name yet
        raise fail(f"run {busy[-1].run_id} ({busy[-1].command}, pid {busy[-1].pid}) is in progress; prune once it "
                   "has finished", 1)
    return referenced_runs(states)


def _show_prune(results: list[PruneResult], planned: bool = False) -> None:
    verb = "would remove" if planned else "removed"
    for r in results:
        if r.plan is not None:
            gone = r.plan.remove if planned else r.removed
            _say(f"{r.host}: {verb} {', '.join(gone) or 'nothing'}; kept {', '.join(r.plan.kept) or 'nothing'}")
            if r.plan.held:
                _say(f"{r.host}: also kept {', '.join(r.plan.held)}: an unfinished run is or refers to it")
        if r.error:
            _say(f"{r.host}: {r.error}")
    total = sum(len(r.plan.remove if planned and r.plan else r.removed) for r in results)
    failed = sum(1 for r in results if r.error)
    _say(f"RECAP backups prune: {len(results)} host(s), {total} run(s) {'to remove' if planned else 'removed'}"
         + (f", {failed} host(s) failed" if failed else "") + (" (attention needed)" if failed else " (ok)"))


# ---------------------------------------------------------------------- lab
LabState = Annotated[Path, typer.Option("--state-dir", help="the lab's state folder")]


def _lab(state_dir: Path) -> Any:
    from remediate.lab import Lab

    return Lab(state_dir)


@lab_app.command("up")
def lab_up(hosts: Annotated[int | None, typer.Option("--hosts", help="number of hosts (default 3)")] = None,
           scenario: Annotated[list[str] | None, typer.Option("--scenario", help="scenario per host, cycled; "
                                                                "repeat or comma-separate; 'all' = every one")]
           = None,
           inventory_out: Annotated[Path | None, typer.Option("--inventory-out", help="also write the "
                                                                "inventory here")] = None,
           subnet: Annotated[str, typer.Option("--subnet")] = "10.99.0.0/24",
           state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Start lab hosts and write an inventory for them."""
    from remediate.lab import SCENARIOS

    names = [s for item in (scenario or []) for s in item.split(",") if s]
    if names == ["all"]:
        names = list(SCENARIOS)
    count = hosts or (len(names) if names else 3)
    lab = _lab(state_dir)
    started = time.monotonic()
    try:
        lab.up(count, names or None, subnet=subnet)
        if inventory_out:
            lab.write_inventory(inventory_out)
    except LabError as exc:
        raise fail(str(exc), 2 if "root" in str(exc) or "missing" in str(exc) else 1) from exc
    _lab_table(lab)
    out.print(f"lab up: {count} host(s) in {time.monotonic() - started:.1f}s; inventory: "
              f"{inventory_out or lab.inventory_path}")


@lab_app.command("down")
def lab_down(state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Stop every lab process, delete its namespaces, links and state folder (safe to repeat)."""
    _lab(state_dir).down()
    out.print("lab down")


@lab_app.command("status")
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
        raise fail(str(exc), 1) from exc


@lab_app.command("cut")
def lab_cut(host: str, state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Cut a host's network link."""
    _lab_op(state_dir, "cut", host)


@lab_app.command("restore")
def lab_restore(host: str, state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Restore a host's network link."""
    _lab_op(state_dir, "restore", host)


@lab_app.command("stop")
def lab_stop(host: str, service: Annotated[str, typer.Argument(help="sshd or mta")],
             state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Stop a host's sshd or MTA."""
    _lab_op(state_dir, "service", host, service, "stop")


@lab_app.command("start")
def lab_start(host: str, service: Annotated[str, typer.Argument(help="sshd or mta")],
              state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Start a host's sshd or MTA."""
    _lab_op(state_dir, "service", host, service, "start")


@lab_app.command("reset")
def lab_reset(host: str, state_dir: LabState = Path("/run/remediate-lab")) -> None:
    """Rebuild a host from scratch in its scenario."""
    _lab_op(state_dir, "reset", host)


def main() -> None:
    try:
        app()
    except RemediateError as exc:  # anything not mapped closer to its cause
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(1)
