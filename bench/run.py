#!/usr/bin/env python3
"""Benchmark (issue #9): remediate against Ansible, nmap and the floor, on a lab of open-relay hosts.

    sudo python3 bench/run.py                       # everything: 20 hosts, 3 pairs, both links, scaling
    sudo python3 bench/run.py --hosts 3 --pairs 1 --delay-ms 0 --scaling none    # a quick check

For each link (`--delay-ms 0,25`: the lab as it is, then 25 ms of netem delay each way on every host's
link) and each lab size (`--hosts` and the `--scaling` sizes), `--pairs` rounds of:
  apply  reset -> `remediate apply --yes --forks N` -> check (every host secure; `--check`: nmap on the last
         pair, one foreign RCPT per host on the others) / reset -> ansible-playbook
         bench/ansible/playbook.yaml (forks N) -> check
  floor  bench/floor.py (one SSH connection, one `postfix reload`, one SMTP probe per host, N threads)
  scan   on a half-fixed lab (even hosts fixed by remediate, untimed): `remediate scan --forks N`, then
         `nmap -p25 --script smtp-open-relay`, verdicts compared host by host.
Resets and checks are not timed. Each timed command reports wall seconds, CPU seconds of its process tree
(os.wait4 / RUSAGE_CHILDREN) and peak RSS. Writes bench/results.json, bench/RESULTS.md and
bench/scaling.png (`--render results.json` rewrites the last two without a lab).

Needs root (the lab), nmap, `pip install -e '.[bench]'` (ansible-core, matplotlib), and tc netem, or
iptables where the kernel has no netem (bench/delayline.py). Only one lab workload should run on a
machine at a time: wrap it in `flock /work/lab.lock ...` where labs are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import smtplib
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import relaycheck
import report
import tools
from testbed import Testbed, addresses
from timing import Measurement, become_subreaper, timed

BENCH = Path(__file__).resolve().parent


def _relays(address: str) -> bool | str:
    """False when `address` refuses a foreign recipient; True when it accepts it; why, when it cannot be asked."""
    try:
        return relaycheck.relay_open(address)
    except (OSError, smtplib.SMTPException) as exc:
        return f"not asked: {exc}"

SECTIONS = ("apply", "floor", "scan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--hosts", type=int, default=20, help="the main lab size (default 20)")
    p.add_argument("--pairs", type=int, default=3, help="A/B rounds per size and link (default 3)")
    p.add_argument("--delay-ms", default="0,25", help="links to measure: one-way netem delay in ms, "
                   "comma-separated; 0 = the lab as it is (default 0,25)")
    p.add_argument("--scaling", default="5,10,20,40", help="more lab sizes, comma-separated, or 'none' "
                   "(default 5,10,20,40)")
    p.add_argument("--full-sizes", default="10,20", help="sizes measured with every pair on every link (the "
                   "issue's targets are at 10 and 20 hosts); the other sizes get one pair on the first link "
                   "only (default 10,20)")
    p.add_argument("--only", default=",".join(SECTIONS), help="sections: apply, floor, scan (comma-separated)")
    p.add_argument("--forks", type=int, default=0, help="parallelism of every tool (default: the host count)")
    p.add_argument("--state-dir", default="/run/rm-bench")
    p.add_argument("--subnet", default="10.94.0.0/24")
    p.add_argument("--prefix", default="rmbench", help="lab link/namespace name prefix")
    p.add_argument("--workdir", help="logs and reports of every run (default a new temp dir, kept)")
    p.add_argument("--out", default=str(BENCH), help="where results.json, RESULTS.md, scaling.png go")
    p.add_argument("--note", default="", help="a line put at the top of RESULTS.md")
    p.add_argument("--check", choices=("nmap", "rcpt", "last"), default="last",
                   help="how every apply run is checked to end with all hosts secure: nmap's 16 forms (about "
                   "19 s a run: Postfix slows its replies after 10 errors), one foreign RCPT per host "
                   "(bench/relaycheck.py, in parallel), or nmap on the last pair and rcpt on the others "
                   "(default last)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds to wait after a reset (default 2)")
    p.add_argument("--render", metavar="RESULTS_JSON", help="only rewrite RESULTS.md and the plot from this file")
    args = p.parse_args(argv)
    args.delays = [int(x) for x in args.delay_ms.split(",") if x != ""]
    extra = [] if args.scaling in ("", "none") else [int(x) for x in args.scaling.split(",")]
    args.sizes = sorted({args.hosts, *extra})
    args.full = {int(x) for x in args.full_sizes.split(",") if x.strip()}
    args.sections = [s for s in args.only.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}; use {', '.join(SECTIONS)}")
    return args


def untimed(argv: list[str], d: Path) -> None:
    """Run a set-up step in `d` (output to d/log); raise CalledProcessError naming the log when it fails."""
    with open(d / "log", "wb") as log:
        proc = subprocess.run(argv, cwd=d, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv, output=f"see {d / 'log'}")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        if args.workdir:
            self.work = Path(args.workdir)
            self.work.mkdir(parents=True, exist_ok=True)
        else:
            self.work = Path(tempfile.mkdtemp(prefix=f"remediate-bench-{time.strftime('%Y%m%dT%H%M%S')}-"))
        self.bed = Testbed(args.state_dir, args.subnet, args.prefix)
        self.runs: list[dict[str, object]] = []
        self.verdicts: list[dict[str, object]] = []
        self.links: dict[int, dict[str, object]] = {}
        self.params: dict[str, str] = {}
        self.seq = 0
        self.overhead: dict[str, float] = {}   # untimed seconds: resets, checks

    # ----------------------------------------------------------------- helpers
    def dir(self, label: str) -> Path:
        self.seq += 1
        path = self.work / f"{self.seq:03d}-{label}"
        path.mkdir()
        return path

    def record(self, m: Measurement, **fields: object) -> None:
        self.bed.check_delay()
        row = {**fields, **asdict(m)}
        self.runs.append(row)
        ok = "ok" if row.get("ok") else "FAILED: " + str(row.get("why"))
        print(f"  {row['section']:5} {row['tool']:9} n={row['hosts']:<3} delay={row['delay_ms']:<3} "
              f"pair {row['pair']}: {m.wall:6.2f} s wall, {m.cpu:6.2f} s cpu, {m.maxrss_mib:5.0f} MiB  {ok}",
              flush=True)

    def reset(self, n: int) -> None:
        start = time.monotonic()
        self.bed.reset(self.bed.names[:n])
        self.overhead["reset"] = self.overhead.get("reset", 0.0) + time.monotonic() - start
        time.sleep(self.args.settle)

    def all_secure(self, inventory: Path, d: Path, pair: int) -> str | None:
        """None when no host of `inventory` relays (checked as `--check` says); else why not."""
        addrs = addresses(inventory)
        start = time.monotonic()
        if self.args.check == "nmap" or (self.args.check == "last" and pair == self.args.pairs):
            xml = d / "check.xml"
            subprocess.run(tools.nmap(list(addrs.values()), xml), check=True, capture_output=True)
            self.overhead["nmap check"] = self.overhead.get("nmap check", 0.0) + time.monotonic() - start
            found = tools.nmap_verdicts(xml)
            bad = {name: found.get(a) for name, a in addrs.items() if found.get(a) is not False}
            return f"nmap after the run: {bad}" if bad else None
        with ThreadPoolExecutor(max_workers=len(addrs) or 1) as pool:
            relays = dict(zip(addrs, pool.map(_relays, addrs.values()), strict=True))
        self.overhead["rcpt check"] = self.overhead.get("rcpt check", 0.0) + time.monotonic() - start
        bad = {name: why for name, why in relays.items() if why is not False}
        return f"foreign RCPT after the run: {bad}" if bad else None

    # ----------------------------------------------------------------- set-up
    def plan_parameters(self) -> None:
        """What `remediate plan` changes on mx1: the parameters the playbook must set (untimed)."""
        d = self.dir("plan")
        inv = self.bed.sub_inventory(1, d / "inventory.yaml")
        untimed(tools.remediate("plan", inv, 1, d / "plan.json"), d)
        self.params = tools.plan_parameters(d / "plan.json")
        print(f"remediate's plan sets in main.cf: {self.params}", flush=True)

    # ----------------------------------------------------------------- sections
    def apply_round(self, n: int, delay: int, pair: int, inv: Path, forks: int) -> None:
        base = {"section": "apply", "hosts": n, "delay_ms": delay, "pair": pair}
        self.reset(n)
        d = self.dir(f"apply-remediate-n{n}-d{delay}")
        m = timed(tools.remediate("apply", inv, forks, d / "report.json"), cwd=d, log=d / "log")
        statuses = tools.apply_statuses(d / "report.json") if (d / "report.json").exists() else {}
        why = (f"exit {m.rc}" if m.rc else None) or (
            None if statuses and set(statuses.values()) == {"changed"} else f"statuses {statuses}")
        why = why or self.all_secure(inv, d, pair)
        self.record(m, **base, tool="remediate", ok=why is None, why=why, phases=tools.apply_phases(d))

        self.reset(n)
        d = self.dir(f"apply-ansible-n{n}-d{delay}")
        argv, env = tools.ansible(inv, forks, self.params, d, backup_id=d.name)
        m = timed(argv, cwd=d, log=d / "log", env=env, daemon_marker=str(d / "cp"))
        why = (f"exit {m.rc}" if m.rc else None) or self.all_secure(inv, d, pair)
        self.record(m, **base, tool="ansible", ok=why is None, why=why, phases=tools.ansible_tasks(d))

    def floor_round(self, n: int, delay: int, pair: int, inv: Path, forks: int) -> None:
        d = self.dir(f"floor-n{n}-d{delay}")
        m = timed(tools.floor(inv, forks, d / "report.json"), cwd=d, log=d / "log")
        self.record(m, section="apply", tool="floor", hosts=n, delay_ms=delay, pair=pair, ok=m.rc == 0,
                    why=f"exit {m.rc}" if m.rc else None)

    def scan_rounds(self, n: int, delay: int, inv: Path, forks: int, pairs: int) -> None:
        """Half the hosts fixed (untimed), then `pairs` rounds of remediate scan and nmap."""
        self.reset(n)
        d = self.dir(f"scan-setup-n{n}-d{delay}")
        fixed = self.bed.names[1:n:2]
        if fixed:
            untimed(tools.remediate("apply", inv, forks, d / "report.json", "--limit", ",".join(fixed)), d)
        addrs = addresses(inv)
        for pair in range(1, pairs + 1):
            base = {"section": "scan", "hosts": n, "delay_ms": delay, "pair": pair}
            d = self.dir(f"scan-remediate-n{n}-d{delay}")
            m = timed(tools.remediate("scan", inv, forks, d / "report.json"), cwd=d, log=d / "log")
            ours = tools.scan_verdicts(d / "report.json") if (d / "report.json").exists() else {}
            expected = {name: name not in fixed for name in addrs}
            why = None if m.rc in (0, 1) and ours == expected else f"exit {m.rc}, verdicts {ours}"
            self.record(m, **base, tool="remediate", ok=why is None, why=why)

            d = self.dir(f"scan-nmap-n{n}-d{delay}")
            m = timed(tools.nmap(list(addrs.values()), d / "nmap.xml"), cwd=d, log=d / "log")
            found = tools.nmap_verdicts(d / "nmap.xml") if m.rc == 0 else {}
            theirs = {name: found.get(a) for name, a in addrs.items()}
            why = None if m.rc == 0 and None not in theirs.values() else f"exit {m.rc}, verdicts {theirs}"
            self.record(m, **base, tool="nmap", ok=why is None, why=why)
            differ = {name: {"remediate": ours.get(name), "nmap": theirs[name]} for name in addrs
                      if ours.get(name) != theirs[name]}
            self.verdicts.append({**base, "hosts_open": sum(1 for v in theirs.values() if v),
                                  "identical": not differ, "differ": differ})
            print(f"  verdicts: {differ or 'identical'}", flush=True)

    # ----------------------------------------------------------------- main
    def run(self) -> int:
        args = self.args
        started = time.time()
        try:
            print(f"lab up: {max(args.sizes)} hosts ({args.state_dir}, {args.subnet}); logs in {self.work}",
                  flush=True)
            self.bed.up(max(args.sizes))
            if "apply" in args.sections:
                self.plan_parameters()
            for delay in args.delays:
                self.bed.set_delay(delay)
                self.links[delay] = {"rtt_ms": round(self.bed.rtt_ms(), 2), "method": self.bed.delay_method}
                print(f"link: {delay} ms each way ({self.bed.delay_method}), TCP connect RTT "
                      f"{self.links[delay]['rtt_ms']:.2f} ms", flush=True)
                for n in args.sizes:
                    full = n in args.full or n == args.hosts
                    if not full and delay != args.delays[0]:
                        continue
                    inv = self.bed.sub_inventory(n, self.work / f"inventory-{n}.yaml")
                    forks = args.forks or n
                    for pair in range(1, (args.pairs if full else 1) + 1):
                        if "apply" in args.sections:
                            self.apply_round(n, delay, pair, inv, forks)
                        if "floor" in args.sections:
                            self.floor_round(n, delay, pair, inv, forks)
                    if "scan" in args.sections:
                        self.scan_rounds(n, delay, inv, forks, args.pairs if full else 1)
                self.bed.set_delay(0)
        finally:
            self.bed.down()
            print("lab down", flush=True)
        data = {"meta": self.meta(time.time() - started), "params": self.params, "links": self.links,
                "runs": self.runs, "verdicts": self.verdicts}
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
        report.write(data, out)
        failed = [r for r in self.runs if not r["ok"]] + [v for v in self.verdicts if not v["identical"]]
        print(f"wrote {out / 'RESULTS.md'}, {out / 'scaling.png'}, {out / 'results.json'}; "
              f"{len(failed)} failed run(s)/verdict(s)")
        return 1 if failed else 0

    def meta(self, seconds: float) -> dict[str, object]:
        import remediate

        src = Path(remediate.__file__).resolve().parent.parent

        def git(*a: str) -> str:
            return subprocess.run(["git", "-C", str(src), *a], capture_output=True, text=True).stdout.strip()

        def version(argv: list[str]) -> str:
            try:
                return subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()[0]
            except (OSError, IndexError):
                return "?"

        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.machine())
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
        return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cores": os.cpu_count(), "cpu": cpu,
                "mem_mib": mem, "kernel": platform.release(), "python": platform.python_version(),
                "remediate": f"{src} @ {git('rev-parse', '--short', 'HEAD')}"
                             + (" (uncommitted changes)" if git("status", "--porcelain", "--", "remediate") else ""),
                "ansible": version([tools.ansible_playbook_path(), "--version"]),
                "nmap": version(["nmap", "--version"]),
                "command": "python3 bench/run.py " + shlex.join("..." if self.args.note and a == self.args.note
                                                                 else a for a in sys.argv[1:]),
                "seconds": round(seconds),
                "pairs": self.args.pairs, "sizes": self.args.sizes, "main_size": self.args.hosts,
                "delays": self.args.delays, "sections": self.args.sections, "note": self.args.note,
                "untimed_seconds": {k: round(v) for k, v in self.overhead.items()}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        report.write(json.loads(Path(args.render).read_text()), Path(args.out))
        return 0
    if os.geteuid() != 0:
        sys.exit("the benchmark starts a lab (network namespaces, mounts, tc): run it as root")
    become_subreaper()
    return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
