"""`remediate backups list|show|prune`: the local store and both copies of each backup."""

from __future__ import annotations

import fnmatch
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from remediate.cli.common import Backups, Forks, Inventory, Limit, Runs, Yes, confirm, exit_code, fail, out
from remediate.errors import ConfigError, LockError, RemediateError
from remediate.model import Host

if TYPE_CHECKING:   # imported by the commands when they run (`--help` loads no SSH stack)
    from remediate.backup.housekeeping import Inspection, PruneResult
    from remediate.journal import RunState

app = typer.Typer(no_args_is_help=True, help="The backup store: list runs, check both copies, prune old runs.")
RunIdArg = Annotated[str, typer.Argument(metavar="RUN_ID", help="a run id, like 20261128T204700Z-3f9a")]


def _inventory_hosts(inventory: Path, limit: str | None) -> list[Host]:
    """The inventory's hosts selected by --limit (no driver needed: backups are plain files)."""
    from remediate.inventory import load_inventory, select

    try:
        return list(select(load_inventory(inventory), limit))
    except ConfigError as exc:
        raise fail(exc) from exc


def _each_host(hosts: list[Host], forks: int, work: Any) -> list[Any]:
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


@app.command("list")
def backups_list(inventory: Annotated[Path | None, typer.Option("-i", "--inventory", help="only this inventory's "
                                                                "hosts (default: every host in the store)")] = None,
                 limit: Limit = None, backups: Backups = Path("backups"), runs: Runs = Path("runs")) -> None:
    """Runs in the local backup store per host: when, which files, and what the run's journal says.
    Contacts no host. Exit 1 when a manifest is unreadable (the row says why)."""
    from remediate.backup import housekeeping
    from remediate.journal import list_runs

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
    unreadable = 0
    for host, run_id in pairs:
        try:
            manifest = store.local_manifest(host, run_id)
        except (RemediateError, OSError) as exc:
            table.add_row(host, run_id, "?", f"[red]manifest unreadable[/]: {escape(str(exc))}", "")
            unreadable += 1
            continue
        assert manifest is not None  # runs() lists only folders with a manifest
        files = f"{len(manifest.files)}: " + ", ".join(f.path for f in manifest.files)
        table.add_row(host, run_id, manifest.created, files, _journal_word(journals.get(run_id), host))
    # on a terminal, fit it; in a pipe or file, one line per run (whole paths, greppable)
    wide = Measurement.get(out, out.options.update_width(10_000), table).maximum
    (out if out.is_terminal else Console(file=out.file, width=wide)).print(table)
    if unreadable:   # a backup that cannot be restored from its manifest needs attention
        raise typer.Exit(exit_code(False))


@app.command("show")
def backups_show(run_id: RunIdArg, inventory: Inventory = Path("inventory.yaml"), limit: Limit = None,
                 backups: Backups = Path("backups"), forks: Forks = 10) -> None:
    """A run's manifest per host and whether each file's local and host copies are present and intact.
    Reads only (connects to the hosts for their copies). Exit 0 only when every copy is intact."""
    from remediate.backup import housekeeping
    from remediate.backup.housekeeping import valid_run_id

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
        raise typer.Exit(exit_code(False))


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


@app.command("prune")
def backups_prune(keep: Annotated[int, typer.Option("--keep", help="runs kept per host, newest first (at least 1)")],
                  inventory: Inventory = Path("inventory.yaml"), limit: Limit = None,
                  backups: Backups = Path("backups"), runs: Runs = Path("runs"), yes: Yes = False,
                  forks: Forks = 10) -> None:
    """Per host, delete all but the newest KEEP runs' backups, locally and on the host. Never the newest,
    never a run that an unfinished (live or interrupted) run is or refers to."""
    from remediate.backup import housekeeping

    if keep < 1:
        raise fail(f"--keep {keep}: keep at least 1 run per host (the newest backup is never removed)")
    hosts = _inventory_hosts(inventory, limit)
    store = housekeeping.Backups(backups)
    confirmed: dict[str, tuple[str, ...]] | None = None

    def show_planned() -> None:
        nonlocal confirmed
        planned = _each_host(hosts, forks, lambda h: store.prune_host(h, keep, _protected_runs(runs), dry_run=True))
        _show_prune(planned, planned=True)
        confirmed = {p.host: p.plan.remove for p in planned if p.plan and p.plan.remove}
        if not confirmed:
            raise typer.Exit(exit_code(not any(p.error for p in planned)))

    confirm(yes, "prune deletes backups", lambda: f"Delete {sum(map(len, (confirmed or {}).values()))} backup(s) "
            f"on these hosts and in {backups}/?", before=show_planned)
    protected = _protected_runs(runs)  # afresh: a run may have started while someone read the plan
    results = _each_host(hosts, forks, lambda h: store.prune_host(
        h, keep, protected, None if confirmed is None else confirmed.get(h.name, ())))
    _show_prune(results)
    if any(r.error for r in results):
        raise typer.Exit(exit_code(False))


def _protected_runs(runs: Path) -> frozenset[str]:
    """Runs prune must keep, from the journals; exits 1 while a run that may restore an old backup is live."""
    from remediate.backup.housekeeping import referenced_runs
    from remediate.journal import list_runs

    states = list_runs(runs)
    busy = [s for s in states if s.live and s.command != "apply"]
    if busy:  # a live rollback may be about to restore a run its journal does not name yet
        raise fail(LockError(f"run {busy[-1].run_id} ({busy[-1].command}, pid {busy[-1].pid}) is in progress; "
                             "prune once it has finished"))
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
