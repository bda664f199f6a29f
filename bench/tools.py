"""The contenders: command lines for remediate, Ansible, nmap and the floor, and how to read their results.

Every command runs with this interpreter (`sys.executable`), so `remediate` is whatever the installed
package points at (the editable install) and Ansible is the ansible-core installed beside it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import xml.etree.ElementTree as ET  # noqa: S405 - parses nmap's own XML output, written by us
from pathlib import Path

from floor import read_inventory

BENCH = Path(__file__).resolve().parent
ANSIBLE_DIR = BENCH / "ansible"
PARAM = re.compile(r"^\+([a-z_][a-z0-9_]*)\s*=\s*(.*)$")


# ----------------------------------------------------------------- remediate
def remediate(command: str, inventory: Path, forks: int, report: Path, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "remediate", command, "-i", str(inventory), "--forks", str(forks),
            "--report", str(report)]
    return [*argv, "--yes", *extra] if command == "apply" else [*argv, *extra]


def plan_parameters(plan_report: Path) -> dict[str, str]:
    """The main.cf parameters remediate's plan sets on the first host, from its unified diff.

    Raises ValueError when the change is anything the Ansible playbook does not do (another file, a
    continuation line, a removed parameter that is not re-set), so the two contenders never silently differ."""
    host = json.loads(plan_report.read_text())["hosts"][0]
    if host["status"] != "would_change" or not host.get("diff"):
        raise ValueError(f"plan of {host['name']}: {host['status']}, no diff to follow")
    params: dict[str, str] = {}
    removed: set[str] = set()
    for line in host["diff"].splitlines():
        if line.startswith(("+++", "---")):
            if not line.endswith(("/etc/postfix/main.cf", "etc/postfix/main.cf")):
                raise ValueError(f"the plan changes another file than main.cf: {line}")
            continue
        if line.startswith("+"):
            match = PARAM.match(line)
            if not match:
                raise ValueError(f"the plan adds a line the playbook cannot set with lineinfile: {line!r}")
            params[match.group(1)] = match.group(2).strip()
        elif line.startswith("-") and (match := PARAM.match("+" + line[1:])):
            removed.add(match.group(1))
    if not params or removed - set(params):
        raise ValueError(f"the plan removes parameters it does not set again: {sorted(removed - set(params))}")
    return params


def scan_verdicts(report: Path) -> dict[str, bool | None]:
    """Per host: True when remediate's scan found an open relay, False when it did not, None when it could
    not say (unreachable, inconclusive)."""
    verdicts: dict[str, bool | None] = {}
    for host in json.loads(report.read_text())["hosts"]:
        if host["status"] in ("secure", "vulnerable"):
            verdicts[host["name"]] = any(f["code"] == "open_relay" for f in host.get("findings_before") or [])
        else:
            verdicts[host["name"]] = None
    return verdicts


PHASES = ("locked", "backed_up", "written", "validated", "reloaded", "verified", "done")


def apply_phases(run_dir: Path) -> dict[str, float]:
    """Median seconds per phase over the hosts of one `remediate apply` (from its journal): `locked` counts
    from the run's start (connect, detect, read, probe, simulate), each later phase from the one before."""
    from statistics import median

    per: dict[str, list[float]] = {}
    for journal in run_dir.glob("runs/*/journal.jsonl"):
        rows = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
        start = next((r["ts"] for r in rows if r.get("event") == "run_started"), None)
        hosts: dict[str, dict[str, float]] = {}
        for r in rows:
            if r.get("event") == "phase" and r.get("phase") in PHASES:
                hosts.setdefault(r["host"], {})[r["phase"]] = r["ts"]
        for seen in hosts.values():
            before = start
            for phase in PHASES:
                if phase in seen and before is not None:
                    per.setdefault(phase, []).append(seen[phase] - before)
                    before = seen[phase]
    return {phase: round(median(values), 3) for phase, values in per.items()}


def ansible_tasks(workdir: Path) -> dict[str, float]:
    """Seconds per task of one ansible-playbook run (a task name seen twice is summed)."""
    path = workdir / "tasks.json"
    tasks: dict[str, float] = {}
    for name, seconds in json.loads(path.read_text())["tasks"] if path.exists() else []:
        tasks[name] = round(tasks.get(name, 0.0) + seconds, 3)
    return tasks


def apply_statuses(report: Path) -> dict[str, str]:
    return {h["name"]: h["status"] for h in json.loads(report.read_text())["hosts"]}


# ----------------------------------------------------------------- nmap
def nmap(addresses: list[str], xml_out: Path) -> list[str]:
    return ["nmap", "-n", "-Pn", "-p25", "--script", "smtp-open-relay", "-oX", str(xml_out), *addresses]


def nmap_verdicts(xml_out: Path) -> dict[str, bool | None]:
    """Per address: True for "Server is an open relay", False for a script that ran and found none, None
    when port 25 was not open or the script did not run."""
    verdicts: dict[str, bool | None] = {}
    for host in ET.parse(xml_out).getroot().iter("host"):  # noqa: S314 - nmap's own output
        address = str(host.find("address").get("addr"))  # type: ignore[union-attr]
        script = host.find("./ports/port[@portid='25']/script[@id='smtp-open-relay']")
        state = host.find("./ports/port[@portid='25']/state")
        if script is None or state is None or state.get("state") != "open":
            verdicts[address] = None
        else:
            verdicts[address] = "Server is an open relay" in (script.get("output") or "")
    return verdicts


# ----------------------------------------------------------------- floor
def floor(inventory: Path, forks: int, report: Path) -> list[str]:
    return [sys.executable, str(BENCH / "floor.py"), "-i", str(inventory), "--forks", str(forks),
            "--report", str(report)]


# ----------------------------------------------------------------- Ansible
def ansible_playbook_path() -> str:
    beside = Path(sys.executable).parent / "ansible-playbook"
    found = str(beside) if beside.exists() else shutil.which("ansible-playbook")
    if not found:
        raise FileNotFoundError("ansible-playbook not found: pip install -e '.[bench]'")
    return found


def ansible(inventory: Path, forks: int, params: dict[str, str], workdir: Path,
            backup_id: str) -> tuple[list[str], dict[str, str]]:
    """Write an Ansible inventory (from the remediate inventory), ansible.cfg and the extra vars into
    `workdir`; return the ansible-playbook argv and the environment to run it with."""
    hosts: dict[str, dict[str, object]] = {}
    for t in read_inventory(inventory):
        entry: dict[str, object] = {
            "ansible_host": t.address, "ansible_port": t.port, "ansible_user": t.user,
            "ansible_ssh_private_key_file": t.identity_file,
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={t.known_hosts} -o StrictHostKeyChecking=yes",
            "ansible_python_interpreter": "/usr/bin/python3"}
        if t.become:
            entry["ansible_become"] = True
        hosts[t.name] = entry
    (workdir / "cp").mkdir(parents=True, exist_ok=True)
    (workdir / "hosts.json").write_text(json.dumps({"mail": {"hosts": hosts}}, indent=1))
    cfg = (ANSIBLE_DIR / "ansible.cfg.in").read_text().format(
        inventory=workdir / "hosts.json", forks=forks, workdir=workdir, callbacks=ANSIBLE_DIR / "callback_plugins")
    (workdir / "ansible.cfg").write_text(cfg)
    (workdir / "vars.json").write_text(json.dumps({"postfix_params": params, "backup_id": backup_id}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(workdir / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_HOME": str(workdir / "ansible-home"),
           "BENCH_ANSIBLE_TIMING": str(workdir / "tasks.json")}
    argv = [ansible_playbook_path(), str(ANSIBLE_DIR / "playbook.yaml"), "-e", f"@{workdir / 'vars.json'}"]
    return argv, env
