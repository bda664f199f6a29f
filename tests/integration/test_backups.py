"""`remediate backups list|show|prune` on the lab: the real command line against real sshd and Postfix.

One apply on two spare open-relay hosts makes a run; `show` checks both copies (and says when one is
corrupt, missing or cannot be reached); `prune` removes older runs on the host and locally, and never the
newest or one an unfinished run needs. Host copies are read and damaged through each host's own root.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_cli

HOSTS = ("mx8", "mx9")   # spare open-relay hosts of the test lab
MAIN_CF = "files/etc/postfix/main.cf"


@pytest.fixture(scope="module")
def work(lab, tmp_path_factory):
    """Both hosts fresh, then one apply on both: (working folder, run id). Hosts reset again at the end."""
    for host in HOSTS:
        lab.reset(host)
    work = tmp_path_factory.mktemp("backups")
    proc = cli(lab, work, "apply", "--yes", "--limit", ",".join(HOSTS), "--report", "apply.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = {h["backup_id"] for h in json.loads((work / "apply.json").read_text())["hosts"]}
    assert len(ids) == 1, ids
    yield work, ids.pop()
    for host in HOSTS:
        lab.restore(host)
        lab.reset(host)


def cli(lab, work, *args, inventory=None):
    return run_cli(*args, "-i", str(inventory or lab.inventory_path), cwd=work)


def on_host(lab, host, run_id):
    return lab.path(host, f"/var/backups/remediate/{run_id}")


def test_list_shows_each_hosts_run_its_file_and_journal_state_without_contacting_hosts(lab, work):
    work, run_id = work
    proc = cli(lab, work, "backups", "list", "--limit", ",".join(HOSTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if run_id in line]
    assert len(rows) == 2 and {h for h in HOSTS if any(h in r for r in rows)} == set(HOSTS), proc.stdout
    assert all("done" in r and "1: /etc/postfix/main.cf" in r for r in rows), proc.stdout
    proc = run_cli("backups", "list", "--limit", "mx9", "--runs", str(work / "elsewhere"), cwd=work)
    assert proc.returncode == 0 and "no journal" in proc.stdout and "mx8" not in proc.stdout, proc.stdout


def test_show_prints_the_manifest_and_finds_both_copies_intact(lab, work):
    work, run_id = work
    proc = cli(lab, work, "backups", "show", run_id, "--limit", ",".join(HOSTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((work / "backups" / "mx8" / run_id / "manifest.json").read_text())
    record = manifest["files"][0]
    for text in (manifest["host_key"], manifest["playbook"], manifest["created"], record["sha256"],
                 f"mx8 ({lab.host('mx8').address})", "mode 0644", "owner root:root"):
        assert text in proc.stdout, text
    assert proc.stdout.count("local copy: intact") == 2 and proc.stdout.count("host copy:  intact") == 2


def test_show_exits_1_naming_a_corrupt_host_copy_or_a_missing_host_manifest(lab, work):
    work, run_id = work
    copy = on_host(lab, "mx9", run_id) / MAIN_CF
    original = copy.read_bytes()
    copy.write_bytes(original + b"# tampered\n")
    try:
        proc = cli(lab, work, "backups", "show", run_id, "--limit", "mx9")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"host copy:  corrupt (mx9:/var/backups/remediate/{run_id}/{MAIN_CF}" in proc.stdout
        assert "local copy: intact" in proc.stdout
    finally:
        copy.write_bytes(original)
    manifest = on_host(lab, "mx9", run_id) / "manifest.json"
    saved = manifest.read_bytes()
    manifest.unlink()
    try:
        proc = cli(lab, work, "backups", "show", run_id, "--limit", "mx9")
        assert proc.returncode == 1 and "no manifest on the host" in proc.stdout, proc.stdout + proc.stderr
        assert "host copy:  intact" in proc.stdout
    finally:
        manifest.write_bytes(saved)
    assert cli(lab, work, "backups", "show", run_id, "--limit", "mx9").returncode == 0


def test_show_reads_the_hosts_manifest_when_the_local_store_is_gone(lab, work):
    work, run_id = work
    local = work / "backups" / "mx9" / run_id
    shutil.move(local, work / "moved-away")
    try:
        proc = cli(lab, work, "backups", "show", run_id, "--limit", "mx9")
        assert proc.returncode == 1, proc.stdout + proc.stderr     # a copy is missing
        assert "(manifest from the host)" in proc.stdout and "host copy:  intact" in proc.stdout
        lines = [line.strip() for line in proc.stdout.splitlines()]   # paths as the store has them
        assert any(line.startswith("local copy: missing (") and line.endswith(f"mx9/{run_id}/{MAIN_CF})")
                   for line in lines), proc.stdout
        assert any(line.startswith("problem: no local manifest") and line.endswith(f"mx9/{run_id}/manifest.json")
                   for line in lines), proc.stdout
    finally:
        shutil.move(work / "moved-away", local)


def test_show_says_unknown_for_an_unreachable_host_and_still_checks_the_local_copy(lab, work, tmp_path):
    work, run_id = work
    quick = tmp_path / "inventory.yaml"
    quick.write_text(lab.inventory_path.read_text().replace("  mta: postfix", "  mta: postfix\n  connect_timeout: 2"))
    lab.cut("mx9")
    try:
        proc = cli(lab, work, "backups", "show", run_id, "--limit", "mx9", inventory=quick)
    finally:
        lab.restore("mx9")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "host copy:  unknown (unreachable: " in proc.stdout and "local copy: intact" in proc.stdout


def test_show_refuses_a_malformed_run_id_and_a_bad_inventory_with_2_and_an_unknown_run_with_1(lab, work, tmp_path):
    work, run_id = work
    assert cli(lab, work, "backups", "show", "../../etc").returncode == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts: {mx8: {adress: 10.0.0.1}}\n")
    proc = cli(lab, work, "backups", "show", run_id, inventory=bad)
    assert proc.returncode == 2 and "adress" in proc.stderr
    proc = cli(lab, work, "backups", "show", "20000101T000000Z-0000", "--limit", "mx8")
    assert proc.returncode == 1 and "no backup of run 20000101T000000Z-0000" in proc.stdout


def test_prune_removes_older_runs_on_the_host_and_locally_but_never_a_needed_or_the_newest(lab, work):
    work, first = work
    # a second run on mx8: undo the first, then apply again
    assert cli(lab, work, "rollback", "--yes", "--limit", "mx8", "--run", first).returncode == 0
    proc = cli(lab, work, "apply", "--yes", "--limit", "mx8", "--report", "second.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    second = json.loads((work / "second.json").read_text())["hosts"][0]["backup_id"]
    assert second != first

    proc = cli(lab, work, "backups", "prune", "--keep", "1", "--limit", "mx8")
    assert proc.returncode == 2 and "--yes" in proc.stderr
    assert on_host(lab, "mx8", first).is_dir() and (work / "backups" / "mx8" / first).is_dir()

    # an interrupted run that was restoring the first run: prune must keep it
    stale = work / "runs" / "20000101T000000Z-dead"
    stale.mkdir(parents=True)
    (stale / "journal.jsonl").write_text(
        '{"event": "run_started", "command": "rollback", "pid": null}\n'
        f'{{"event": "phase", "host": "mx8", "phase": "locked", "restoring": "{first}"}}\n')
    try:
        proc = cli(lab, work, "backups", "prune", "--keep", "1", "--yes", "--limit", "mx8")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"mx8: removed nothing; kept {second}" in proc.stdout and f"also kept {first}" in proc.stdout
        assert on_host(lab, "mx8", first).is_dir() and (work / "backups" / "mx8" / first).is_dir()
    finally:
        shutil.rmtree(stale)

    proc = cli(lab, work, "backups", "prune", "--keep", "1", "--yes", "--limit", "mx8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"mx8: removed {first}; kept {second}" in proc.stdout
    assert not on_host(lab, "mx8", first).exists() and not (work / "backups" / "mx8" / first).exists()
    assert (on_host(lab, "mx8", second) / MAIN_CF).is_file()
    assert (work / "backups" / "mx8" / second / MAIN_CF).is_file()
    assert on_host(lab, "mx9", first).is_dir(), "prune went beyond --limit"
    assert cli(lab, work, "backups", "show", second, "--limit", "mx8").returncode == 0
