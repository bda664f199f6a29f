"""`remediate hostkeys`: fingerprints to verify out of band, unknown keys trusted only on request,
changed keys never."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import run_cli


def _inventory(lab, tmp_path: Path, known_hosts: Path) -> Path:
    inv = tmp_path / "inventory.yaml"
    inv.write_text(lab.inventory_path.read_text().replace(str(lab.known_hosts), str(known_hosts)))
    return inv


def _fingerprint(lab, name: str) -> str:
    pub = Path(lab.host(name).dir) / "ssh_host_ed25519_key.pub"
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


def test_unknown_keys_are_shown_and_written_only_when_asked(lab, tmp_path, reliability):
    known = tmp_path / "known_hosts"
    inv = _inventory(lab, tmp_path, known)
    secure = next(h for h in lab.hosts if h.scenario == "secure")
    shown = run_cli("hostkeys", "-i", str(inv), "--limit", secure.name, cwd=tmp_path)
    assert shown.returncode == 1 and "unknown" in shown.stdout
    assert _fingerprint(lab, secure.name) in shown.stdout          # the same fingerprint ssh-keygen shows
    assert not known.exists()
    assert run_cli("hostkeys", "-i", str(inv), "--limit", secure.name, "--write", cwd=tmp_path).returncode == 2
    written = run_cli("hostkeys", "-i", str(inv), "--limit", secure.name, "--write", "--yes", cwd=tmp_path)
    assert written.returncode == 0, written.stdout + written.stderr
    assert known.read_text().startswith(f"{secure.address} ssh-ed25519 ")
    scan = run_cli("scan", "-i", str(inv), "--limit", secure.name, cwd=tmp_path)
    assert scan.returncode == 0, scan.stdout + scan.stderr   # the tool now connects with the trusted key
    reliability("security",
                "unknown host key",
                "refused; `hostkeys` shows the fingerprint, written only with --write --yes",
                "untouched until trusted")


def test_a_changed_key_is_reported_and_never_written(lab, tmp_path, reliability):
    a, b = lab.hosts[0], lab.hosts[1]
    other_key = next(line for line in lab.known_hosts.read_text().splitlines() if line.startswith(b.address + " "))
    known = tmp_path / "known_hosts"
    known.write_text(other_key.replace(b.address, a.address, 1) + "\n")   # b's key filed under a's address
    inv = _inventory(lab, tmp_path, known)
    before = known.read_text()
    proc = run_cli("hostkeys", "-i", str(inv), "--limit", a.name, "--write", "--yes", cwd=tmp_path)
    assert proc.returncode == 1 and "changed" in proc.stdout
    assert known.read_text() == before
    apply = run_cli("apply", "--yes", "-i", str(inv), "--limit", a.name, "--report", "r.json", cwd=tmp_path)
    error = json.loads((tmp_path / "r.json").read_text())["hosts"][0]["error"]
    assert apply.returncode == 1 and "does NOT match" in error
    # the message names the host and both fingerprints: what it offers (a's) and what known_hosts has (b's)
    assert a.name in error and _fingerprint(lab, a.name) in error and _fingerprint(lab, b.name) in error, error
    reliability("fault",
                "2 host key changed",
                "refused before authentication, naming the host and both fingerprints",
                "untouched; known_hosts never rewritten")
