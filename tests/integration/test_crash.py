"""Crash safety on the lab: whatever the orchestrator or the network does, each host ends remediated and
verified, or byte-identical to before with Postfix answering, and nothing is lost.

Faults are real: the orchestrator is SIGKILLed (REMEDIATE_FAULT makes it kill itself right after a phase
is durably journalled), links are cut with the lab, backup copies are deleted or corrupted on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.checks import FOREIGN, nmap_open_relay, rcpt, snapshot

HOST = "mx8"   # a spare open-relay host of the test lab


@pytest.fixture
def fresh(lab, tmp_path):
    """HOST fresh in its scenario, its original files, and an inventory with short command timeouts."""
    lab.reset(HOST)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(lab.inventory_path.read_text().replace("  mta: postfix",
                                                                "  mta: postfix\n  command_timeout: 8"))
    yield inventory, snapshot(lab.path(HOST, "/"))
    lab.restore(HOST)
    lab.reset(HOST)


def cli(inventory, cwd, *args, env=None):
    return run_cli(*args, "-i", str(inventory), "--limit", HOST, cwd=cwd, env=env)


def journal_phases(cwd: Path) -> dict[str, list[str]]:
    phases: dict[str, list[str]] = {}
    for path in (cwd / "runs").glob("*/journal.jsonl"):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("event") == "phase":
                phases.setdefault(path.parent.name, []).append(rec["phase"])
    return phases


def assert_as_before(lab, original) -> None:
    assert snapshot(lab.path(HOST, "/")) == original, "files not byte-identical to before"
    host = lab.host(HOST)
    assert rcpt(host.address, f"postmaster@{host.fqdn}") == 250, "Postfix not answering"
    assert not lab.path(HOST, "/var/lib/remediate/lock.json").exists(), "a lock was left behind"


def assert_remediated(lab) -> None:
    host = lab.host(HOST)
    assert not nmap_open_relay(host.address)[host.address]
    assert rcpt(host.address, FOREIGN) in (454, 554)
    assert rcpt(host.address, f"postmaster@{host.fqdn}") == 250


@pytest.mark.parametrize("phase", ["backed_up", "written"])
def test_sigkill_then_rollback_run_restores_byte_identical(lab, fresh, tmp_path, phase, reliability):
    inventory, original = fresh
    killed = cli(inventory, tmp_path, "apply", "--yes", env={"REMEDIATE_FAULT": f"{phase}:kill"})
    assert killed.returncode == -signal.SIGKILL
    run_id = next(iter(journal_phases(tmp_path)))
    assert journal_phases(tmp_path)[run_id][-1] == phase

    status = run_cli("status", cwd=tmp_path)
    assert f"{run_id} apply INTERRUPTED" in status.stdout and f"{HOST}: {phase}" in status.stdout
    refused = cli(inventory, tmp_path, "apply", "--yes")
    assert refused.returncode == 2 and run_id in refused.stderr

    rolled = cli(inventory, tmp_path, "rollback", "--yes", "--run", run_id, "--report", "rb.json")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    result = json.loads((tmp_path / "rb.json").read_text())["hosts"][0]
    # killed after the backup but before any write, the files were never changed: nothing to restore
    assert result["status"] == ("skipped" if phase == "backed_up" else "restored"), result
    assert_as_before(lab, original)
    assert "INTERRUPTED" not in run_cli("status", cwd=tmp_path).stdout
    again = cli(inventory, tmp_path, "apply", "--yes")
    assert again.returncode == 0, again.stdout + again.stderr   # no longer blocked, and it works
    assert_remediated(lab)
    reliability("fault",
                f"orchestrator SIGKILLed after {phase}",
                "`status` shows the run INTERRUPTED; apply refused until `rollback --run` settles it",
                "byte-identical, Postfix answering, no lock left; a later apply works")


def test_sigkill_after_write_then_resume_finishes_the_run(lab, fresh, tmp_path, reliability):
    inventory, original = fresh
    killed = cli(inventory, tmp_path, "apply", "--yes", env={"REMEDIATE_FAULT": "written:kill"})
    assert killed.returncode == -signal.SIGKILL
    run_id = next(iter(journal_phases(tmp_path)))
    resumed = cli(inventory, tmp_path, "resume", run_id, "--yes", "--report", "resume.json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    result = json.loads((tmp_path / "resume.json").read_text())["hosts"][0]
    assert result["status"] == "changed" and "finished from phase written" in result["notes"]
    assert_remediated(lab)
    assert journal_phases(tmp_path)[run_id][-1] == "done"
    assert "INTERRUPTED" not in run_cli("status", cwd=tmp_path).stdout
    reliability("fault",
                "orchestrator SIGKILLed after the write",
                "`resume RUN_ID` finishes the run: changed",
                "remediated and verified from outside")


def _apply_cut_at(lab, inventory, tmp_path, phase: str, timeout: float) -> tuple[subprocess.Popen, str, str, float]:
    """Run apply held at `phase` (REMEDIATE_FAULT), cut HOST's link, let it go on: (process, stdout, stderr,
    seconds from the cut to the end)."""
    gate = tmp_path / "go-on"
    proc = subprocess.Popen([sys.executable, "-m", "remediate", "apply", "--yes", "-i", str(inventory),
                             "--limit", HOST, "--report", "apply.json"], cwd=tmp_path,
                            env={**os.environ, "REMEDIATE_FAULT": f"{HOST}/{phase}:wait={gate}"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while phase not in sum(journal_phases(tmp_path).values(), []):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    lab.cut(HOST)
    started = time.monotonic()
    gate.touch()
    out, err = proc.communicate(timeout=timeout)
    return proc, out, err, time.monotonic() - started


def test_link_cut_after_the_write_then_restored_and_rolled_back(lab, fresh, tmp_path, reliability):
    inventory, original = fresh
    proc, out, err, _ = _apply_cut_at(lab, inventory, tmp_path, "written", timeout=240)
    assert proc.returncode == 1, out + err
    result = json.loads((tmp_path / "apply.json").read_text())["hosts"][0]
    assert result["status"] == "failed" and "ROLLBACK FAILED" in result["error"], result
    run_id = result["backup_id"]

    lab.restore(HOST)
    rolled = cli(inventory, tmp_path, "rollback", "--yes", "--run", run_id)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert_as_before(lab, original)
    reliability("fault",
                "5 link cut after the write, before reload",
                "failed: ROLLBACK FAILED (host unreachable), with the `rollback --run` to use",
                "restored byte-identical by `rollback --run` once the link is back")


def _apply_once(lab, inventory, tmp_path) -> str:
    proc = cli(inventory, tmp_path, "apply", "--yes", "--report", "apply.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp_path / "apply.json").read_text())["hosts"][0]["backup_id"]


def test_rollback_works_when_the_local_store_is_gone(lab, fresh, tmp_path, reliability):
    inventory, original = fresh
    _apply_once(lab, inventory, tmp_path)
    shutil.rmtree(tmp_path / "backups")
    rolled = cli(inventory, tmp_path, "rollback", "--yes")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert_as_before(lab, original)
    reliability("fault",
                "local backup store deleted",
                "rollback restores from the copy on the host",
                "byte-identical, Postfix answering")


def test_rollback_works_when_the_copy_on_the_host_is_gone(lab, fresh, tmp_path, reliability):
    inventory, original = fresh
    run_id = _apply_once(lab, inventory, tmp_path)
    lab.exec(HOST, ["rm", "-rf", f"/var/backups/remediate/{run_id}"], check=True)
    rolled = cli(inventory, tmp_path, "rollback", "--yes", "--run", run_id)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert_as_before(lab, original)
    reliability("fault",
                "backup copy on the host deleted",
                "rollback restores from the local copy",
                "byte-identical, Postfix answering")


def test_a_corrupt_backup_is_refused_naming_the_file_and_nothing_is_written(lab, fresh, tmp_path, reliability):
    inventory, original = fresh
    run_id = _apply_once(lab, inventory, tmp_path)
    local = tmp_path / "backups" / HOST / run_id / "files/etc/postfix/main.cf"
    local.write_text(local.read_text() + "# tampered\n")
    # only the local copy is bad: refused (and said so), the intact host copy is used
    rolled = cli(inventory, tmp_path, "rollback", "--yes", "--run", run_id, "--report", "rb.json")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    notes = " ".join(json.loads((tmp_path / "rb.json").read_text())["hosts"][0]["notes"])
    assert f"local copy {local} is corrupt" in notes
    assert_as_before(lab, original)

    run_id = _apply_once(lab, inventory, tmp_path)   # now both copies bad: refused outright
    remediated = snapshot(lab.path(HOST, "/"))
    local = tmp_path / "backups" / HOST / run_id / "files/etc/postfix/main.cf"
    local.write_text("# tampered\n")
    on_host = lab.path(HOST, f"/var/backups/remediate/{run_id}/files/etc/postfix/main.cf")
    on_host.write_text("# tampered too\n")
    refused = cli(inventory, tmp_path, "rollback", "--yes", "--run", run_id, "--report", "rb2.json")
    assert refused.returncode == 1
    error = json.loads((tmp_path / "rb2.json").read_text())["hosts"][0]["error"]
    assert "/etc/postfix/main.cf" in error and "corrupt" in error
    assert snapshot(lab.path(HOST, "/")) == remediated, "a refused rollback must not write anything"
    reliability("hostile input",
                "corrupt backup copy (local; then both)",
                "the corrupt copy refused naming the file, the intact one used; both corrupt: refused",
                "byte-identical; when refused: nothing written")


def test_sigterm_finishes_the_host_in_flight_and_starts_no_other(lab, tmp_path, reliability):
    hosts = ["mx8", "mx9"]
    for name in hosts:
        lab.reset(name)
    originals = {n: snapshot(lab.path(n, "/")) for n in hosts}
    gate = tmp_path / "go-on"
    proc = subprocess.Popen([sys.executable, "-m", "remediate", "apply", "--yes", "-i", str(lab.inventory_path),
                             "--limit", ",".join(hosts), "--forks", "1", "--report", "apply.json"], cwd=tmp_path,
                            env={**os.environ, "REMEDIATE_FAULT": f"mx8/written:wait={gate}"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while "written" not in sum(journal_phases(tmp_path).values(), []):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        gate.touch()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, out + err
        statuses = {h["name"]: h["status"] for h in json.loads((tmp_path / "apply.json").read_text())["hosts"]}
        assert statuses == {"mx8": "changed", "mx9": "skipped"}
        assert snapshot(lab.path("mx9", "/")) == originals["mx9"]
        address = lab.host("mx8").address
        assert not nmap_open_relay(address)[address]
    finally:
        for name in hosts:
            lab.reset(name)
    reliability("fault",
                "SIGTERM during a fleet run",
                "the host in flight finishes (changed), no new host starts (skipped)",
                "mx8 remediated, mx9 untouched")


def test_link_cut_after_the_reload_before_verification_then_restored_and_rolled_back(lab, fresh, tmp_path,
                                                                                      reliability):
    """Fault 5, second half: the reload went through, then the link goes before the verification probe."""
    inventory, original = fresh
    inventory.write_text(inventory.read_text().replace("  command_timeout: 8", "  command_timeout: 3\n"
                                                       "  probe_timeout: 2"))
    proc, out, err, seconds = _apply_cut_at(lab, inventory, tmp_path, "reloaded", timeout=120)
    assert proc.returncode == 1, out + err
    result = json.loads((tmp_path / "apply.json").read_text())["hosts"][0]
    assert result["status"] == "failed" and "verification probe after reload" in result["error"], result
    assert "ROLLBACK FAILED" in result["error"] and f"rollback --run {result['backup_id']}" in result["error"]
    run_id = result["backup_id"]
    assert f"{HOST}: failed" in run_cli("status", cwd=tmp_path).stdout   # `status` shows where it stopped

    lab.restore(HOST)
    rolled = cli(inventory, tmp_path, "rollback", "--yes", "--run", run_id, "--report", "rb.json")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert json.loads((tmp_path / "rb.json").read_text())["hosts"][0]["status"] == "restored"
    assert_as_before(lab, original)
    reliability("fault",
                "5 link cut after the reload, before verification",
                "failed: verification failed, ROLLBACK FAILED (host unreachable), with the `rollback --run` to use; "
                "`status` shows the host failed",
                "restored byte-identical by `rollback --run` once the link is back, Postfix answering", seconds)
