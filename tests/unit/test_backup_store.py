"""The backup store's housekeeping on the local side: which runs exist, whether copies are intact, and
which runs a prune may remove (never the newest, never one an unfinished run needs)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediate.backup import FileRecord, Manifest, sha256
from remediate.backup.housekeeping import Backups, CopyState, plan_prune, referenced_runs, valid_run_id
from remediate.errors import BackupError
from remediate.journal import Journal, list_runs
from remediate.model import new_run_id

RUN_A, RUN_B, RUN_C = "20261128T204700Z-3f9a", "20261129T080000Z-0001", "20261130T120000Z-beef"
MAIN_CF = b"mynetworks = 0.0.0.0/0\n"


def saved(store: Backups, host: str, run_id: str, files: dict[str, bytes] | None = None,
          manifest_host: str | None = None) -> Manifest:
    """A local backup as `BackupStore.save` leaves it: files/<path> plus manifest.json."""
    files = {"/etc/postfix/main.cf": MAIN_CF} if files is None else files
    records = tuple(FileRecord(path, sha256(data), len(data), 0o644, 0, 0, "root", "root", 1_700_000_000)
                    for path, data in files.items())
    manifest = Manifest(run_id, manifest_host or host, "10.0.0.1", "SHA256:abc", "0.1.0", "postfix@1",
                        "2026-11-28T20:47:00Z", records)
    base = store.local_dir(host, run_id)
    for path, data in files.items():
        (base / "files" / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (base / "files" / path.lstrip("/")).write_bytes(data)
    (base / "manifest.json").write_bytes(manifest.to_json())
    return manifest


# ---------------------------------------------------------------------- run ids
def test_run_ids_made_by_the_tool_are_valid_and_nothing_path_like_is():
    assert valid_run_id(new_run_id())
    assert valid_run_id(RUN_A)
    for bad in ("", "..", "/", "../etc", f"{RUN_A}/..", f"{RUN_A}\n", f" {RUN_A}", RUN_A.upper(),
                "20261128T204700Z-3f9", "20261128T204700Z-3f9ag", "*", "20261128T204700Z-*"):
        assert not valid_run_id(bad), bad


def test_remove_refuses_anything_but_a_run_id_before_touching_a_host(tmp_path):
    with pytest.raises(BackupError, match="not a run id"):
        Backups(tmp_path).remove(None, "../../etc")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- listing
def test_runs_lists_backups_with_a_manifest_and_local_runs_every_run_folder(tmp_path):
    store = Backups(tmp_path / "backups")
    saved(store, "mx1", RUN_B)
    saved(store, "mx1", RUN_A)
    saved(store, "mx2", RUN_A)
    store.local_dir("mx1", RUN_C).mkdir(parents=True)        # a save that died before its manifest
    (store.root / "mx1" / "notes").mkdir()                  # not a run: never listed, never pruned
    assert store.runs() == [("mx1", RUN_A), ("mx2", RUN_A), ("mx1", RUN_B)]
    assert store.runs("mx2") == [("mx2", RUN_A)]
    assert store.local_runs("mx1") == [RUN_A, RUN_B, RUN_C]
    assert store.local_runs("nohost") == []
    assert Backups(tmp_path / "nothing").runs() == []


# ---------------------------------------------------------------------- copies
def test_an_intact_local_copy_is_intact_and_an_unasked_host_copy_is_unknown_with_the_reason(tmp_path):
    store = Backups(tmp_path)
    manifest = saved(store, "mx1", RUN_A)
    [status] = store.copies("mx1", manifest, None, "unreachable: no route to host")
    assert status.record.path == "/etc/postfix/main.cf"
    assert status.local.state is CopyState.INTACT and status.local.describe() == "intact"
    assert status.host.state is CopyState.UNKNOWN
    assert status.host.describe() == "unknown (unreachable: no route to host)"
    assert not status.ok


def test_a_corrupt_or_missing_local_copy_is_reported_naming_the_file(tmp_path):
    store = Backups(tmp_path)
    manifest = saved(store, "mx1", RUN_A, {"/etc/postfix/main.cf": MAIN_CF, "/etc/postfix/master.cf": b"smtp\n"})
    main_cf = store.local_dir("mx1", RUN_A) / "files/etc/postfix/main.cf"
    main_cf.write_bytes(MAIN_CF + b"tampered\n")
    (store.local_dir("mx1", RUN_A) / "files/etc/postfix/master.cf").unlink()
    corrupt, missing = (s.local for s in store.copies("mx1", manifest))
    assert corrupt.state is CopyState.CORRUPT and str(main_cf) in corrupt.detail
    assert sha256(MAIN_CF)[:12] in corrupt.detail                     # what the manifest says
    assert missing.state is CopyState.MISSING and missing.detail.endswith("files/etc/postfix/master.cf")


def test_an_unreadable_local_copy_is_unknown_not_missing(tmp_path):
    store = Backups(tmp_path)
    manifest = saved(store, "mx1", RUN_A)
    copy = store.local_dir("mx1", RUN_A) / "files/etc/postfix/main.cf"
    copy.unlink()
    copy.mkdir()  # unreadable as a file even for root
    assert store.local_copy("mx1", RUN_A, manifest.files[0]).state is CopyState.UNKNOWN


def test_inspect_without_the_host_uses_the_local_manifest_and_is_not_ok(tmp_path):
    store = Backups(tmp_path)
    manifest = saved(store, "mx1", RUN_A)
    view = store.inspect("mx1", RUN_A, None, "no route to host")
    assert view.manifest == manifest and view.source == "local store"
    assert [c.host.describe() for c in view.copies] == ["unknown (unreachable: no route to host)"]
    assert view.problems == () and not view.ok


def test_inspect_of_a_run_nowhere_to_be_read_is_a_problem_not_an_error(tmp_path):
    view = Backups(tmp_path).inspect("mx1", RUN_A, None, "connection refused")
    assert view.manifest is None and not view.ok
    assert "could not be asked: connection refused" in view.problems[0]


def test_inspect_flags_a_manifest_of_another_host_and_an_unreadable_one(tmp_path):
    store = Backups(tmp_path)
    saved(store, "mx1", RUN_A, manifest_host="mx2")
    assert "of host mx2" in store.inspect("mx1", RUN_A).problems[0]
    (store.local_dir("mx1", RUN_B)).mkdir(parents=True)
    (store.local_dir("mx1", RUN_B) / "manifest.json").write_text("{not json")
    view = store.inspect("mx1", RUN_B, None, "down")
    assert view.manifest is None and "unreadable or incomplete" in view.problems[0]


# ---------------------------------------------------------------------- prune plan
def test_prune_keeps_the_newest_n_and_removes_the_rest_oldest_first():
    plan = plan_prune("mx1", [RUN_B, RUN_C, RUN_A], keep=1)
    assert plan.kept == (RUN_C,) and plan.remove == (RUN_A, RUN_B) and plan.held == ()
    plan = plan_prune("mx1", [RUN_B, RUN_C, RUN_A, RUN_A], keep=2)
    assert plan.kept == (RUN_C, RUN_B) and plan.remove == (RUN_A,)
    assert plan_prune("mx1", [RUN_A], keep=5).remove == ()
    assert plan_prune("mx1", [], keep=1).remove == ()


def test_prune_holds_runs_an_unfinished_run_needs_and_ignores_what_is_not_a_run():
    plan = plan_prune("mx1", [RUN_A, RUN_B, RUN_C, "lost+found", "../x"], keep=1, protected={RUN_A})
    assert plan.kept == (RUN_C,) and plan.held == (RUN_A,) and plan.remove == (RUN_B,)


def test_prune_refuses_to_keep_nothing():
    with pytest.raises(ValueError, match="at least 1"):
        plan_prune("mx1", [RUN_A], keep=0)


run_ids = st.builds(lambda d, h: f"2026{d:04d}T000000Z-{h:04x}", st.integers(101, 1231), st.integers(0, 0xFFFF))


@given(runs=st.lists(run_ids | st.text(max_size=25), max_size=12), keep=st.integers(1, 5),
       protected=st.sets(run_ids, max_size=4))
def test_prune_never_removes_the_newest_a_protected_run_or_a_non_run(runs, keep, protected):
    plan = plan_prune("mx1", runs, keep, protected | set(runs[:1]))
    valid = {r for r in runs if valid_run_id(r)}
    removed = set(plan.remove)
    assert removed <= valid - protected - set(runs[:1])
    if valid:
        assert max(valid) in plan.kept
    assert len(plan.kept) == min(keep, len(valid))
    assert set(plan.kept) | set(plan.held) | removed == valid                 # every run accounted for once
    assert len(plan.kept) + len(plan.held) + len(plan.remove) == len(valid)
    assert all(r < min(plan.kept) for r in removed)


# ---------------------------------------------------------------------- journals
def test_unfinished_runs_and_the_runs_they_restore_are_protected_finished_ones_are_not(tmp_path):
    runs = tmp_path / "runs"
    old, done = Journal(runs, RUN_A), Journal(runs, RUN_B)
    old.start("apply", "inventory.yaml", ["mx1"])
    old.record("mx1", "done")
    old.finish()
    done.start("rollback", "inventory.yaml", ["mx1"])
    done.record("mx1", "locked", restoring=RUN_A)
    done.finish()
    assert referenced_runs(list_runs(runs)) == frozenset()
    live = Journal(runs, RUN_C)                      # a rollback still running (or killed) restoring RUN_A
    live.start("rollback", "inventory.yaml", ["mx1"])
    live.record("mx1", "locked", restoring=RUN_A)
    assert referenced_runs(list_runs(runs)) == {RUN_A, RUN_C}


def test_an_interrupted_apply_protects_its_own_backup(tmp_path):
    runs = tmp_path / "runs"
    (runs / RUN_B).mkdir(parents=True)
    (runs / RUN_B / "journal.jsonl").write_text(
        '{"event": "run_started", "command": "apply", "pid": null}\n'
        '{"event": "phase", "host": "mx1", "phase": "written", "files": ["/etc/postfix/main.cf"]}\n')
    [state] = list_runs(runs)
    assert state.interrupted
    assert referenced_runs([state]) == {RUN_B}
    assert plan_prune("mx1", [RUN_A, RUN_B, RUN_C], keep=1, protected=referenced_runs([state])).remove == (RUN_A,)


def test_a_local_store_it_creates_is_private_every_directory_0700_every_file_0600(tmp_path):
    """Issue #11: backups 0600 in 0700 directories, locally too: the store, each host's and run's folder."""
    import stat

    from remediate.backup import BackupStore, Saved
    from remediate.model import Host
    from remediate.shell import PosixShell
    from remediate.transport import Local

    live = tmp_path / "etc" / "main.cf"
    live.parent.mkdir()
    live.write_bytes(MAIN_CF)
    shell = PosixShell(Local(Host("mx1", "127.0.0.1")))
    shell.backup_root = str(tmp_path / "on-host")
    store = BackupStore(tmp_path / "store" / "backups")
    store.save(shell, RUN_A, "postfix@1", [Saved(str(live), MAIN_CF, shell.stat(str(live)), "file")])
    made = [tmp_path / "store", *(tmp_path / "store").rglob("*")]
    assert len(made) > 5
    for path in made:
        want = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    for path in [tmp_path / "on-host", *(tmp_path / "on-host").rglob("*")]:   # and on the host
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
