"""Damaged plan files, journals and backup manifests (issue #11): truncated, a byte flipped, not JSON, wrong
types, missing keys, a wrong digest. Each is refused with a message naming the file (and the line or key):
on the command line exit 2 with no traceback, before any host is contacted, and nothing is written; a
manifest is refused before anything is restored. A journal's torn last line (a crash mid-write) is not
damage: it is ignored, and the run reads as interrupted."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediate import planfile
from remediate.backup import FileRecord, Manifest, sha256
from remediate.backup.housekeeping import Backups
from remediate.errors import BackupError, ConfigError
from remediate.journal import Journal, list_runs, read_journal
from remediate.model import Finding, HostPlan, HostResult, RunResult, Status
from tests.conftest import run_cli

RUN = "20261128T210317Z-d4da"
OLD_RUN = "20261127T080000Z-0001"
#: a host nobody answers for: refusals must come before any connection
INVENTORY = "hosts:\n  mx1: {address: 192.0.2.1}\n"


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes: what "nothing touched" is checked against."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(root: Path, *args: str, says: str) -> str:
    """Run the CLI in `root`; it must exit 2 naming `says` (the file), print no traceback, and leave every
    file as it was and no runs/ or backups/ folder behind that was not there. Returns stderr."""
    before = tree(root)
    proc = run_cli(*args, cwd=root, timeout=60)
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "[bold red]" not in proc.stderr, proc.stderr
    assert says in message, proc.stderr
    assert tree(root) == before
    return message


# ---------------------------------------------------------------------------------------------------------
# Plan files

def _plan_run() -> RunResult:
    run = RunResult(RUN, "plan")
    run.hosts = [HostResult("mx1", "192.0.2.1", Status.WOULD_CHANGE, (Finding("open_relay", "relay accepted"),),
                            changed=True, diff="--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n", simulation="secure",
                            plan=HostPlan("SHA256:abc", "postfix", "postfix@1", "cd" * 32,
                                          (("/etc/postfix/main.cf", "ab" * 32),),
                                          (("/etc/postfix/main.cf", "01" * 32),),
                                          ("postfix check",), ("postfix reload",)))]
    return run


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    doc = planfile.seal(planfile.document(_plan_run(), tmp_path / "inventory.yaml"))
    planfile.write_plan(doc, tmp_path / "plan.json")
    return tmp_path


def resealed(edit: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    """A damage that keeps the file well sealed: `edit` the document, then digest it again, as a tool other
    than remediate (or a bug) would; only the shape check can refuse it."""
    def damage(raw: bytes) -> bytes:
        doc = json.loads(raw)
        edit(doc)
        return planfile.dumps(planfile.seal(doc)).encode()
    return damage


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return edit


PLAN_DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated to half": (lambda raw: raw[:len(raw) // 2], "truncated"),
    "truncated to nothing": (lambda raw: b"", "not valid JSON"),
    "one byte flipped": (lambda raw: raw[:300] + bytes([raw[300] ^ 0x20]) + raw[301:], "plan.json"),
    "a byte that is not ASCII": (lambda raw: raw[:40] + b"\xe9" + raw[41:], "byte 40 is not ASCII"),
    "not JSON at all": (lambda raw: b"\x00\xff binary \x89PNG", "not a plan file"),
    "a JSON list": (lambda raw: b"[1, 2, 3]\n", "not a plan file"),
    "JSON nested 100,000 deep": (lambda raw: b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "a value edited (wrong digest)": (lambda raw: raw.replace(b'"192.0.2.1"', b'"192.0.2.66"'),
                                      "does not match its digest"),
    "digest removed": (lambda raw: json.dumps({k: v for k, v in json.loads(raw).items() if k != "digest"},
                                              indent=2).encode() + b"\n", "carries no sha256 digest"),
    "resealed: summary is a list": (resealed(_set("summary", [1, 2])), "plan.json: summary: missing, or not"),
    "resealed: tool is a list": (resealed(_set("tool", ["remediate"])), "plan.json: tool: missing"),
    "resealed: a diff is a number": (resealed(_set("hosts.0.diff", 42)), "plan.json: hosts[0].diff: missing"),
    "resealed: commands is a list": (resealed(_set("hosts.0.commands", ["rm -rf /"])), "hosts[0].commands:"),
    "resealed: a finding is a string": (resealed(_set("hosts.0.findings_before", ["open"])),
                                        "hosts[0].findings_before:"),
    "resealed: a host without status": (resealed(_set("hosts.0.status", KeyError)), "hosts[0].status: missing"),
    "resealed: hosts missing": (resealed(_set("hosts", KeyError)), "plan.json: hosts: missing"),
    "resealed: a host is a string": (resealed(_set("hosts", ["mx1"])), "plan.json: hosts[0]: must be a host entry"),
}


@pytest.mark.parametrize("damage", list(PLAN_DAMAGE))
def test_a_damaged_plan_file_is_refused_by_plan_from_and_apply_naming_it(plan_dir, damage, reliability) -> None:
    plan = plan_dir / "plan.json"
    harm, says = PLAN_DAMAGE[damage]
    plan.write_bytes(harm(plan.read_bytes()))
    with pytest.raises(ConfigError) as caught:
        planfile.load_plan(plan)
    assert str(caught.value).startswith(str(plan)) and says in str(caught.value)
    shown = refused(plan_dir, "plan", "--from", "plan.json", "--format", "md", says=says)
    commands = "`plan --from`"
    if damage in ("truncated to half", "one byte flipped", "resealed: tool is a list", "resealed: commands is a list"):
        refused(plan_dir, "apply", "--yes", "--plan", "plan.json", "-i", "inventory.yaml", says=says)
        commands += ", `apply --plan`"
    reliability("hostile input", f"plan file: {damage}", f"exit 2 ({commands}; `load_plan`): {shown[7:110]}",
                "nothing contacted; no runs/ or backups/; the file untouched; no traceback", None, 0)


def test_an_intact_plan_still_renders_and_loads(plan_dir) -> None:
    assert planfile.load_plan(plan_dir / "plan.json").hosts["mx1"].plan.driver == "postfix"
    proc = run_cli("plan", "--from", "plan.json", "--format", "md", cwd=plan_dir)
    assert proc.returncode == 0 and "## mx1 (192.0.2.1): would_change" in proc.stdout, proc.stderr


# ---------------------------------------------------------------------------------------------------------
# Journals

def _journal(runs: Path, run_id: str = RUN, pid: int = 2**22 + 12345) -> Path:
    """An apply run whose orchestrator is gone, stopped after writing mx1's files (so: interrupted)."""
    journal = Journal(runs, run_id)
    journal.start("apply", "inventory.yaml", ["mx1"])
    journal.record("mx1", "locked")
    journal.record("mx1", "backed_up")
    journal.record("mx1", "written", files=["/etc/postfix/main.cf"])
    path = journal.path
    lines = path.read_bytes().splitlines(keepends=True)
    start = json.loads(lines[0])
    start["pid"] = pid   # no such process: the run is not live
    path.write_bytes(json.dumps(start, sort_keys=True).encode() + b"\n" + b"".join(lines[1:]))
    return path


def _line(n: int, new: bytes) -> Callable[[bytes], bytes]:
    def damage(raw: bytes) -> bytes:
        lines = raw.splitlines(keepends=True)
        lines[n - 1] = new + b"\n"
        return b"".join(lines)
    return damage


def _edit_line(n: int, key: str, value: Any) -> Callable[[bytes], bytes]:
    def damage(raw: bytes) -> bytes:
        lines = raw.splitlines(keepends=True)
        rec = json.loads(lines[n - 1])
        if value is KeyError:
            del rec[key]
        else:
            rec[key] = value
        lines[n - 1] = json.dumps(rec).encode() + b"\n"
        return b"".join(lines)
    return damage


JOURNAL_DAMAGE: dict[str, tuple[Callable[[bytes], bytes], int, str]] = {
    "a byte flipped inside a record": (lambda raw: raw.replace(b'"phase": "backed_up"', b'"phase": "backed_up#'),
                                       3, "not a journal record"),
    "a line of bytes that are not UTF-8": (_line(2, b'{"event": "phase", "host": "mx1\xff\xfe"}'), 2, "not a journal"),
    "a JSON list": (_line(2, b"[1, 2]"), 2, "a JSON list, not an object"),
    "a line nested 100,000 deep": (_line(3, b"[" * 100_000 + b"]" * 100_000), 3, "nested too deeply"),
    "an unknown event": (_edit_line(2, "event", "phaze"), 2, "unknown event 'phaze'"),
    "a phase record without its host": (_edit_line(3, "host", KeyError), 3, "phase record without host"),
    "a phase that does not exist": (_edit_line(4, "phase", "writen"), 4, "phase record with phase 'writen'"),
    "a pid that is text": (_edit_line(1, "pid", "4242"), 1, "run_started record with pid '4242'"),
    "a negative pid (a process group)": (_edit_line(1, "pid", -1), 1, "run_started record with pid -1"),
    "a time that is text": (_edit_line(2, "ts", "yesterday"), 2, "ts 'yesterday' is not a time"),
    "an empty line in the middle": (lambda raw: raw.replace(b"\n", b"\n\n", 1), 2, "not a journal record"),
}


@pytest.mark.parametrize("damage", list(JOURNAL_DAMAGE))
def test_a_damaged_journal_is_refused_naming_file_and_line_before_any_host_is_contacted(tmp_path, damage,
                                                                                        reliability) -> None:
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    _manifest(Backups(tmp_path / "backups"), OLD_RUN)   # so that `backups list` gets as far as the journals
    path = _journal(tmp_path / "runs")
    harm, line, says = JOURNAL_DAMAGE[damage]
    path.write_bytes(harm(path.read_bytes()))
    with pytest.raises(ConfigError) as caught:
        read_journal(path)
    assert str(caught.value).startswith(f"{path}:{line}: not a journal record (") and says in str(caught.value)
    where = f"runs/{RUN}/journal.jsonl:{line}"
    commands = [["status"], ["apply", "--yes", "-i", "inventory.yaml"]]
    if damage == next(iter(JOURNAL_DAMAGE)):   # every command that reads journals, once
        commands += [["resume", RUN, "--yes"], ["rollback", "--yes", "-i", "inventory.yaml"], ["backups", "list"],
                     ["backups", "prune", "--keep", "1", "--yes", "-i", "inventory.yaml"]]
    for args in commands:
        message = refused(tmp_path, *args, says=where)
        assert f"the journal of run {RUN} is damaged" in message and "move the file aside" in message
    reliability("hostile input", f"run journal: {damage}", f"exit 2 (status, apply; resume, rollback, backups list and "
                f"prune for the first kind): ...{str(caught.value)[len(str(path)):][:90]}",
                "nothing contacted; nothing written; no traceback", None, 0)


def test_a_torn_last_line_is_a_crash_not_damage_and_the_next_append_cuts_it_off(tmp_path, reliability) -> None:
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    path = _journal(tmp_path / "runs")
    intact = path.read_bytes()
    path.write_bytes(intact + b'{"event": "phase", "host": "mx1", "pha')     # SIGKILL mid-write
    [state] = list_runs(tmp_path / "runs")
    assert state.interrupted and state.phases == {"mx1": "written"}
    proc = run_cli("status", cwd=tmp_path)
    assert proc.returncode == 0 and f"{RUN} apply INTERRUPTED" in proc.stdout and "mx1: written" in proc.stdout
    message = refused(tmp_path, "apply", "--yes", "-i", "inventory.yaml", says=f"run {RUN} was interrupted")
    assert f"remediate rollback --run {RUN}" in message
    Journal(tmp_path / "runs", RUN).finish()   # the next writer (resume, rollback) appends
    appended = path.read_bytes().removeprefix(intact)
    assert path.read_bytes().startswith(intact) and appended.count(b"\n") == 1 and b"pha" not in appended
    assert read_journal(path).finished
    reliability("fault", "run journal truncated mid-line (a crash mid-write)",
                "the torn record ignored: `status` shows the run INTERRUPTED, `apply` refuses until it is settled; "
                "the next append cuts the torn bytes off", "nothing contacted", None, 0)


# ---------------------------------------------------------------------------------------------------------
# Backup manifests

MAIN_CF = b"mynetworks = 0.0.0.0/0\n"


def _manifest(store: Backups, run_id: str = RUN) -> Path:
    rec = FileRecord("/etc/postfix/main.cf", sha256(MAIN_CF), len(MAIN_CF), 0o644, 0, 0, "root", "root",
                     1_700_000_000)
    manifest = Manifest(run_id, "mx1", "192.0.2.1", "SHA256:abc", "0.1.0", "postfix@1", "2026-11-28T21:03:17Z",
                        (rec,))
    base = store.local_dir("mx1", run_id)
    (base / "files/etc/postfix").mkdir(parents=True)
    (base / "files/etc/postfix/main.cf").write_bytes(MAIN_CF)
    (base / "manifest.json").write_bytes(manifest.to_json())
    return base / "manifest.json"


def _manifest_edit(path: str, value: Any) -> Callable[[bytes], bytes]:
    edit = _set(path, value)

    def damage(raw: bytes) -> bytes:
        doc = json.loads(raw)
        edit(doc)
        return json.dumps(doc, indent=2).encode()
    return damage


MANIFEST_DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (lambda raw: raw[:len(raw) // 2], "not JSON"),
    "empty": (lambda raw: b"", "not JSON"),
    "a byte flipped (invalid JSON)": (lambda raw: raw.replace(b'"files": [', b'"files": {'), "not JSON"),
    "a JSON list": (lambda raw: b"[]", "a JSON list, not a manifest"),
    "run id missing": (_manifest_edit("run_id", KeyError), "no run_id"),
    "run id that is a path": (_manifest_edit("run_id", "../../etc"), "run_id: '../../etc'"),
    "files is an object": (_manifest_edit("files", {}), "files: {}"),
    "a file record without sha256": (_manifest_edit("files.0.sha256", KeyError), "files[0]: no sha256"),
    "a sha256 that is not one": (_manifest_edit("files.0.sha256", "abc"), "files[0].sha256: 'abc'"),
    "a relative path": (_manifest_edit("files.0.path", "etc/postfix/main.cf"), "files[0].path: 'etc/postfix/main.cf' "
                                                                               "is not an absolute, normalised path"),
    "a path climbing out": (_manifest_edit("files.0.path", "/etc/postfix/../../root/.ssh/authorized_keys"),
                            "files[0].path: '/etc/postfix/../../root/.ssh/authorized_keys' is not an absolute"),
    "a path that is a number": (_manifest_edit("files.0.path", 7), "files[0].path: 7"),
    "a size that is text": (_manifest_edit("files.0.size", "23"), "files[0].size: '23'"),
    "a mode that is not octal": (_manifest_edit("files.0.mode", "0999"), "files[0].mode: '0999'"),
    "a negative uid": (_manifest_edit("files.0.uid", -1), "files[0].uid: -1"),
    "an unknown kind": (_manifest_edit("files.0.kind", "script"), "files[0].kind: 'script'"),
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_a_damaged_manifest_is_refused_naming_file_and_key_before_anything_is_restored(tmp_path, damage,
                                                                                       reliability) -> None:
    store = Backups(tmp_path / "backups")
    path = _manifest(store)
    harm, says = MANIFEST_DAMAGE[damage]
    path.write_bytes(harm(path.read_bytes()))
    with pytest.raises(BackupError) as caught:
        store.local_manifest("mx1", RUN)   # what `rollback` and `resume` read before restoring anything
    message = str(caught.value)
    assert message.startswith(f"manifest {path} is unreadable or incomplete: ") and says in message, message
    assert message.endswith("nothing was restored")
    reliability("hostile input", f"backup manifest: {damage}",
                f"refused before anything is restored: ...{message[len(f'manifest {path} '):][:90]}",
                "nothing written; `backups list` shows why, exit 1; no traceback", None, 0)
    if damage not in ("truncated", "a file record without sha256", "a path climbing out"):
        return   # the command line shows the same refusal: checked for three kinds
    before = tree(tmp_path)
    proc = run_cli("backups", "list", "--backups", "backups", cwd=tmp_path)
    listed = " ".join(proc.stdout.split())
    assert proc.returncode == 1 and "manifest unreadable" in listed and says.split(":")[0] in listed, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout and tree(tmp_path) == before


class _NoHost:
    """A host shell with no backup copy on it (only what `BackupStore.content` asks)."""

    name = "mx1"
    backup_root = "/var/backups/remediate"

    def exists(self, path: str) -> bool:
        return False


def test_a_manifest_whose_digest_does_not_match_the_copy_is_refused_naming_the_file(tmp_path, reliability) -> None:
    store = Backups(tmp_path / "backups")
    path = _manifest(store)
    path.write_bytes(path.read_bytes().replace(sha256(MAIN_CF).encode(), hashlib.sha256(b"other").hexdigest().encode()))
    manifest = store.local_manifest("mx1", RUN)
    assert manifest is not None
    with pytest.raises(BackupError, match=r"mx1: refusing to restore /etc/postfix/main.cf: local copy .*main.cf is "
                                          r"corrupt \(sha256 .*, manifest says .*\)"):
        store.contents(_NoHost(), manifest)   # type: ignore[arg-type]
    reliability("hostile input", "backup manifest with a wrong sha256 for its copy",
                "refused naming the file and both digests; no copy used", "nothing written", None, 0)


def test_an_intact_manifest_still_reads_and_lists(tmp_path) -> None:
    store = Backups(tmp_path / "backups")
    _manifest(store)
    assert store.local_manifest("mx1", RUN) is not None
    proc = run_cli("backups", "list", "--backups", "backups", "--runs", "runs", cwd=tmp_path)
    assert proc.returncode == 0 and RUN in proc.stdout, proc.stdout + proc.stderr
    assert os.path.exists(tmp_path / "backups" / "mx1" / RUN / "manifest.json")
