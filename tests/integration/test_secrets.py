"""Secrets never leave the operator's environment (issue #11): a key passphrase planted in the environment and
a key path planted in the inventory appear in no output of any command: stdout, stderr, logs, journals,
reports, plan files, backups and manifests (locally and on the host), nor in the messages of the errors a
wrong passphrase or an unknown host key raise."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from tests.conftest import run_cli

HOST = "mx9"   # a spare open-relay host
PASSPHRASE = "PASSPHRASE-7f2e9b-hunter2"
KEYDIR = "KEYPATH-3c1a9f"


def _inventory(lab, tmp_path: Path, name: str, key: Path, *, known_hosts: Path | None = None) -> Path:
    text = lab.inventory_path.read_text().replace(str(lab.key_file), str(key))
    text = text.replace("  mta: postfix", "  mta: postfix\n  password_env: REMEDIATE_TEST_PASSPHRASE")
    if known_hosts is not None:
        text = text.replace(str(lab.known_hosts), str(known_hosts))
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_passphrase_and_a_key_path_appear_in_no_output(lab, tmp_path, reliability):
    lab.reset(HOST)
    started = time.monotonic()
    key = tmp_path / KEYDIR / "id_ed25519"
    key.parent.mkdir()
    shutil.copy(lab.key_file, key)
    key.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", PASSPHRASE, "-f", str(key)], check=True, capture_output=True)
    good = _inventory(lab, tmp_path, "good.yaml", key)
    (tmp_path / "empty_known_hosts").write_text("")
    unknown = _inventory(lab, tmp_path, "unknown.yaml", key, known_hosts=tmp_path / "empty_known_hosts")
    env = {"REMEDIATE_TEST_PASSPHRASE": PASSPHRASE}
    wrong = {"REMEDIATE_TEST_PASSPHRASE": "not-" + PASSPHRASE}
    runs = [
        (good, env, ["scan", "-v", "--report", "scan.json"], 1),
        (good, env, ["plan", "-v", "-o", "plan.json", "--report", "plan-report.json"], 0),
        (good, env, ["apply", "--yes", "-v", "--plan", "plan.json", "--report", "apply.json"], 0),
        (good, env, ["backups", "list"], 0),
        (good, env, ["rollback", "--yes", "-v", "--report", "rollback.json"], 0),
        (good, wrong, ["apply", "--yes", "-v", "--report", "wrong.json"], 1),      # wrong passphrase
        (unknown, env, ["apply", "--yes", "-v", "--report", "unknown.json"], 1),   # unknown host key
    ]
    outputs: list[tuple[str, bytes]] = []
    try:
        for inventory, extra, args, expected in runs:
            proc = run_cli(*args, "-i", str(inventory), "--limit", HOST, cwd=tmp_path, env=extra)
            assert proc.returncode == expected, (args, proc.stdout, proc.stderr)
            outputs += [(f"{args[0]} stdout", proc.stdout.encode()), (f"{args[0]} stderr", proc.stderr.encode())]
        status = run_cli("status", cwd=tmp_path)
        outputs += [("status", status.stdout.encode() + status.stderr.encode())]
        wrong_error = (tmp_path / "wrong.json").read_text()
        assert '"unreachable"' in wrong_error or '"failed"' in wrong_error
        for path in [*tmp_path.rglob("*"), *lab.path(HOST, "/var/backups/remediate").rglob("*"),
                     lab.path(HOST, "/var/log/syslog")]:
            if path.is_file() and KEYDIR not in str(path) and path.suffix != ".yaml":
                outputs.append((str(path), path.read_bytes()))
        leaks = [where for where, data in outputs if PASSPHRASE.encode() in data or KEYDIR.encode() in data]
        assert not leaks, f"secrets found in: {leaks}"
        assert len(outputs) > 20   # logs, journals, reports, the plan, manifests and backups were all read
    finally:
        lab.reset(HOST)
    reliability("security", "a passphrase (environment) and a key path (inventory) planted",
                f"scan, plan, apply --plan, backups list, rollback, status, a wrong passphrase and an unknown "
                f"host key: {len(outputs)} outputs read", "neither appears in any of them", time.monotonic() - started)
