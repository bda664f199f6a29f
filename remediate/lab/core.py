"""The lab: N real mail hosts on this machine, each in its own network, mount, pid and uts namespace.

State lives in one folder (default /run/remediate-lab): `lab.json` records every namespace, link and
pid as soon as it is created, so `down` can always clean up, even after a crash half-way through `up`.
Processes are stopped only by the pids recorded there (each host is a pid namespace whose pid 1 the lab
started; killing it ends every process of the host). Namespaces and links are deleted by their recorded
names, falling back to the lab's own name prefix when the record itself was lost.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from remediate.errors import LabError, LabSetupError
from remediate.lab import mtas, net
from remediate.lab.scenarios import SCENARIOS, scenario_files

DEFAULT_STATE = Path("/run/remediate-lab")
REQUIRED = {"postfix": "/usr/sbin/postfix", "openssh-server": "/usr/sbin/sshd", "sudo": "/usr/bin/sudo",
            "iproute2": "/usr/sbin/ip", "util-linux": "/usr/bin/nsenter",
            "openssh-client": "/usr/bin/ssh-keygen", "openssl": "/usr/bin/openssl",
            "libsasl2-modules": "/usr/lib/*/sasl2/libanonymous.so"}
OPS_USER, OPS_UID = "ops", 2501
SSHD_CONFIG = """\
# remediate lab: this host's own sshd
Port 22
ListenAddress {address}
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile /run/sshd.pid
MaxStartups 200:30:400
MaxSessions 64
Subsystem sftp internal-sftp
"""


@dataclass(slots=True)
class LabHost:
    name: str
    address: str
    scenario: str
    fqdn: str
    netns: str
    veth: str
    dir: str
    pid: int | None = None        # the unshare process (root pid namespace)
    init_pid: int | None = None   # pid 1 of the host, as seen from the root pid namespace

    @property
    def user(self) -> str:
        return OPS_USER if SCENARIOS[self.scenario].sudo_user else "root"

    @property
    def mta(self) -> str:
        return SCENARIOS[self.scenario].mta


def missing_requirements() -> list[str]:
    """Debian packages the lab needs that are not installed (by the file each one provides)."""
    return [pkg for pkg, path in REQUIRED.items() if not glob.glob(path)]


class Lab:
    """One lab, identified by its state folder. Methods raise LabError with what to do next."""

    def __init__(self, state_dir: Path | str = DEFAULT_STATE) -> None:
        self.state_dir = Path(state_dir)
        self.state_file = self.state_dir / "lab.json"
        self.prefix = "rmlab"
        self.subnet = ipaddress.ip_network("10.99.0.0/24")
        self.hosts: list[LabHost] = []
        self.layers: dict[str, str] = {}     # mta -> mounted layer of its packages
        self.bridge_created = False
        self._save_lock = threading.Lock()
        if self.state_file.exists():
            self._load()

    # ----------------------------------------------------------------- state
    @property
    def bridge(self) -> str:
        return f"{self.prefix}0"

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def key_file(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / "inventory.yaml"

    def _load(self) -> None:
        data = json.loads(self.state_file.read_text())
        self.prefix, self.subnet = data["prefix"], ipaddress.ip_network(data["subnet"])
        self.bridge_created = data["bridge_created"]
        self.layers = data.get("layers", {})
        self.hosts = [LabHost(**h) for h in data["hosts"]]

    def _save(self) -> None:
        with self._save_lock:
            self._save_unlocked()

    def _save_unlocked(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {"prefix": self.prefix, "subnet": str(self.subnet), "bridge_created": self.bridge_created,
                "layers": self.layers, "hosts": [asdict(h) for h in self.hosts]}
        tmp = self.state_file.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_file)

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(f"no lab host named {name!r}; `remediate lab status` lists them")

    # ----------------------------------------------------------------- up
    def up(self, count: int = 3, scenarios: list[str] | None = None, *, subnet: str = "10.99.0.0/24",
           prefix: str = "rmlab") -> list[LabHost]:
        """Start `count` hosts (scenarios cycled over them) and write the lab's inventory.

        Refuses to start over an existing lab. On any failure everything created so far is torn down.
        """
        missing = missing_requirements()
        also = (f"; it also needs these packages: {', '.join(missing)} (`sudo scripts/setup-system.sh` "
                "installs them)") if missing else ""
        if os.geteuid() != 0:
            raise LabSetupError("the lab needs root (it creates network namespaces and mounts); run it as root"
                           + also)
        if missing:
            raise LabSetupError("missing system packages: " + ", ".join(missing)
                           + "; run `sudo scripts/setup-system.sh` to install them")
        if self.state_file.exists():
            raise LabError(f"a lab is already up (state in {self.state_dir}); run `remediate lab down` first")
        scenarios = scenarios or ["open-relay"]
        unknown = [s for s in scenarios if s not in SCENARIOS]
        if unknown:
            raise LabError(f"unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}")
        for mta in {SCENARIOS[s].mta for s in scenarios}:
            mtas.debs(mta)   # LabSetupError naming what scripts/setup-system.sh must download
        self.prefix, self.subnet = prefix, ipaddress.ip_network(subnet)
        if count < 1 or count > min(200, self.subnet.num_addresses - 12):
            raise LabError(f"--hosts must be between 1 and {min(200, self.subnet.num_addresses - 12)}")
        assert isinstance(self.subnet, ipaddress.IPv4Network), "the lab is IPv4 only"
        net.check_subnet_free(self.subnet, self.bridge)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._save()
        try:
            self._build(count, scenarios)
        except BaseException:
            self.down()
            raise
        return self.hosts

    def _build(self, count: int, scenarios: list[str]) -> None:
        net.create_bridge(self.bridge, self.gateway, self.subnet.prefixlen)
        self.bridge_created = True
        self._save()
        self._make_credentials()
        for mta in sorted({SCENARIOS[scenarios[i % len(scenarios)]].mta for i in range(count)}):
            if mtas.MTAS[mta].packages:
                self.layers[mta] = str(self.state_dir / "layers" / mta)
                self._save()
                mtas.build_layer(mta, Path(self.layers[mta]))
        for i in range(count):
            name = f"mx{i + 1}"
            h = LabHost(name=name, address=str(self.subnet.network_address + 11 + i),
                        scenario=scenarios[i % len(scenarios)], fqdn=f"{name}.lab.example",
                        netns=f"{self.prefix}-{name}", veth=f"{self.prefix}-{name}",
                        dir=str(self.state_dir / "hosts" / name))
            self.hosts.append(h)
            self._save()
            net.create_host_net(h.netns, h.veth, self.bridge, h.address, self.subnet.prefixlen)
        with ThreadPoolExecutor(max_workers=8) as pool:
            keys = list(pool.map(self._prepare_host, self.hosts))
        self.known_hosts.write_text("".join(f"{h.address} {key}\n" for h, key in zip(self.hosts, keys,
                                                                                        strict=True)))
        for h in self.hosts:
            self._start_host(h)
        with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
            list(pool.map(self._wait_ready, self.hosts))
        self.write_inventory(self.inventory_path)

    def _make_credentials(self) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "remediate-lab",
                        "-f", str(self.key_file)], check=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "30", "-subj", "/CN=lab.example",
                        "-keyout", str(self.state_dir / "tls.key"), "-out", str(self.state_dir / "tls.pem")],
                       check=True, capture_output=True)

    def _prepare_host(self, h: LabHost) -> str:
        """Write the host's private files into its overlay upper dir; return its public host key line."""
        base = Path(h.dir)
        upper = base / "upper"
        for sub in ("upper", "work", "root"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        pub = (self.key_file.with_suffix(".pub")).read_text()
        keyfile = base / "ssh_host_ed25519_key"
        if not keyfile.exists():  # kept across `reset`, so known_hosts stays true
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.fqdn, "-f", str(keyfile)],
                           check=True)
        mta = mtas.MTAS[h.mta]
        stock = Path(self.layers.get(h.mta, "/"))
        files: dict[str, tuple[str, int, int]] = {
            path: (text, 0o755 if text.startswith("#!") else 0o644, 0)   # a script is executable
            for path, text in scenario_files(h.scenario, h.fqdn, stock).items()}
        files.update(_accounts(mta))
        files.update({
            "/etc/hostname": (h.fqdn + "\n", 0o644, 0),
            "/etc/mailname": (h.fqdn + "\n", 0o644, 0),
            "/etc/hosts": (f"127.0.0.1\tlocalhost\n{h.address}\t{h.fqdn} {h.name}\n"
                           # Sendmail defers relay it cannot judge without a PTR for the client (section 9)
                           + (f"{self.gateway}\tcontroller.lab.example\n" if h.mta == "sendmail" else ""),
                           0o644, 0),
            "/etc/sudoers.d/remediate-lab": (f"{OPS_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440, 0),
            "/etc/ssh/sshd_config": (SSHD_CONFIG.format(address=h.address), 0o644, 0),
            "/etc/ssh/ssh_host_ed25519_key": (keyfile.read_text(), 0o600, 0),
            "/etc/ssh/ssh_host_ed25519_key.pub": (keyfile.with_suffix(".pub").read_text(), 0o644, 0),
            # Debian's stock root .bashrc (the machine's may load slow tool managers on every command)
            "/root/.bashrc": ("# ~/.bashrc: executed by bash(1) for non-login shells.\n", 0o644, 0),
            "/root/.ssh/authorized_keys": (pub, 0o600, 0),
            f"/home/{OPS_USER}/.ssh/authorized_keys": (pub, 0o600, OPS_UID),
            "/etc/ssl/remediate-lab/tls.pem": ((self.state_dir / "tls.pem").read_text(), 0o644, 0),
            "/etc/ssl/remediate-lab/tls.key": ((self.state_dir / "tls.key").read_text(), 0o600, 0),
        })
        uids = {user: uid for user, uid, _ in mta.users}
        for path, mode, owner in mta.dirs:
            _mkdirs_like(upper, Path(path), 0, stock)
            os.chmod(upper / path.lstrip("/"), mode)
            os.chown(upper / path.lstrip("/"), uids.get(owner, 0), uids.get(owner, 0))
        for path, (text, mode, uid) in files.items():
            target = upper / path.lstrip("/")
            _mkdirs_like(upper, Path(path).parent, uid, stock)
            target.write_text(text)
            os.chmod(target, mode)
            os.chown(target, uid, uid)
        spec = {"root": str(base / "root"), "upper": str(upper), "work": str(base / "work"),
                "hostname": h.fqdn, "layers": [self.layers[h.mta]] if h.mta in self.layers else [],
                "start": [["/usr/sbin/sshd"], *[list(argv) for argv in mta.start]]}
        (base / "spec.json").write_text(json.dumps(spec))
        return " ".join(keyfile.with_suffix(".pub").read_text().split()[:2])

    def _start_host(self, h: LabHost) -> None:
        hostinit = Path(__file__).with_name("hostinit.py")
        log = open(Path(h.dir) / "init.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{h.netns}", "unshare", "--mount", "--pid", "--uts", "--ipc",
             "--fork", "--kill-child=SIGKILL", sys.executable, str(hostinit), str(Path(h.dir) / "spec.json")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        h.pid = proc.pid
        self._save()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            kids = children.read_text().split() if children.exists() else []
            if kids:
                h.init_pid = int(kids[0])
                self._save()
                return
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        raise LabError(f"{h.name}: its init process did not start; see {h.dir}/init.log")

    def _wait_ready(self, h: LabHost, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for port in (22, 25):
            while not _answers(h.address, port):
                if time.monotonic() > deadline or not _alive(h.pid):
                    tail = (Path(h.dir) / "init.log").read_text(errors="replace")[-1500:]
                    raise LabError(f"{h.name}: port {port} did not answer within {timeout:.0f}s:\n{tail}")
                time.sleep(0.05)

    # ----------------------------------------------------------------- down
    def down(self) -> None:
        """Stop every recorded process, delete namespaces, links and the state folder. Idempotent."""
        for h in self.hosts:
            for pid in (h.pid, h.init_pid):
                if pid and _alive(pid) and _is_ours(pid, h):
                    os.kill(pid, signal.SIGKILL)
            for pid in (h.pid, h.init_pid):
                _wait_gone(pid)
        for h in self.hosts:
            net.delete_netns(h.netns)
            net.delete_link(h.veth)
        # fall back to the prefix for namespaces/links whose record was lost in a crash
        for ns in net.netns_names():
            if ns.startswith(self.prefix + "-"):
                net.delete_netns(ns)
        for link in net.link_names():
            if link.startswith(self.prefix + "-") or link == self.bridge:
                net.delete_link(link)
        for layer in self.layers.values():
            mtas.remove_layer(Path(layer))
        for layer in glob.glob(str(self.state_dir / "layers" / "*")):   # a record lost in a crash
            mtas.remove_layer(Path(layer))
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        self.hosts, self.bridge_created, self.layers = [], False, {}

    # ----------------------------------------------------------------- operate
    def status(self) -> list[dict[str, object]]:
        return [{"name": h.name, "address": h.address, "scenario": h.scenario, "user": h.user,
                 "running": _alive(h.init_pid), "sshd": _answers(h.address, 22),
                 "mta": _answers(h.address, 25)} for h in self.hosts]

    def cut(self, name: str) -> None:
        net.set_link(self.host(name).veth, up=False)

    def restore(self, name: str) -> None:
        net.set_link(self.host(name).veth, up=True)

    def exec(self, name: str, argv: list[str], *, input: str | None = None,
             check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run argv inside host `name` (all its namespaces and its root), as root."""
        h = self.host(name)
        if not _alive(h.init_pid):
            raise LabError(f"{name} is not running; `remediate lab status` shows the lab")
        proc = subprocess.run(["nsenter", "-t", str(h.init_pid), "-m", "-n", "-p", "-u", "-i", "-r", "-w",
                               *argv], input=input, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise LabError(f"{name}: `{' '.join(argv)}` exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def path(self, name: str, path: str) -> Path:
        """Where `path` of host `name` is visible from the machine (through its pid 1's root)."""
        return Path(f"/proc/{self.host(name).init_pid}/root") / path.lstrip("/")

    def service(self, name: str, which: str, action: str) -> None:
        """Start or stop `sshd` or `mta` on host `name`."""
        mta = mtas.MTAS[self.host(name).mta]
        if which == "mta":
            self.exec(name, list(mta.start[-1] if action == "start" else mta.stop), check=True)
        elif which == "sshd" and action == "start":
            self.exec(name, ["/usr/sbin/sshd"], check=True)
        elif which == "sshd" and action == "stop":
            pidfile = self.path(name, "/run/sshd.pid")
            if pidfile.exists():
                self.exec(name, ["kill", pidfile.read_text().strip()], check=True)
        else:
            raise LabError(f"unknown service/action {which} {action}; use sshd|mta and start|stop")

    def reset(self, name: str) -> None:
        """Rebuild host `name` from scratch in its scenario (fresh filesystem, same key and address)."""
        h = self.host(name)
        for pid in (h.pid, h.init_pid):
            if pid and _alive(pid) and _is_ours(pid, h):
                os.kill(pid, signal.SIGKILL)
        for pid in (h.pid, h.init_pid):
            _wait_gone(pid)
        shutil.rmtree(Path(h.dir) / "upper")
        shutil.rmtree(Path(h.dir) / "work")
        self._prepare_host(h)
        self._start_host(h)
        self._wait_ready(h)

    def write_inventory(self, path: Path | str) -> None:
        from remediate.inventory import write_inventory

        hosts: dict[str, dict[str, object]] = {}
        for h in self.hosts:
            entry: dict[str, object] = {"address": h.address, "mail_domain": h.fqdn}
            if h.user != "root":
                entry.update(user=h.user, become=True)
            if h.mta != "postfix":
                entry.update(mta=h.mta)
            hosts[h.name] = entry
        write_inventory(str(path), defaults={
            "user": "root", "identity_file": str(self.key_file), "known_hosts": str(self.known_hosts),
            "mta": "postfix", "policy": "relay-auth", "trusted_networks": ["127.0.0.0/8", "[::1]/128"]},
            hosts=hosts)


def _accounts(mta: mtas.LabMta) -> dict[str, tuple[str, int, int]]:
    """/etc/passwd, group and shadow: the machine's, the lab's `ops` user, and the MTA's system users (what
    its maintainer scripts would have added)."""
    passwd = Path("/etc/passwd").read_text()
    if f"\n{OPS_USER}:" not in "\n" + passwd:
        passwd += f"{OPS_USER}:x:{OPS_UID}:{OPS_UID}::/home/{OPS_USER}:/bin/bash\n"
    group = Path("/etc/group").read_text() + f"{OPS_USER}:x:{OPS_UID}:\n"
    shadow = Path("/etc/shadow").read_text() + f"{OPS_USER}:*:20000:0:99999:7:::\n"
    for user, uid, home in mta.users:
        passwd += f"{user}:x:{uid}:{uid}::{home}:/usr/sbin/nologin\n"
        group += f"{user}:x:{uid}:\n"
        shadow += f"{user}:*:20000:0:99999:7:::\n"
    return {"/etc/passwd": (passwd, 0o644, 0), "/etc/group": (group, 0o644, 0), "/etc/shadow": (shadow, 0o640, 0)}


def _mkdirs_like(upper: Path, path: Path, uid: int, stock: Path = Path("/")) -> None:
    """Create `path` under `upper`, copying each existing directory's mode and owner from the MTA's layer
    (`stock`) or the machine."""
    current = Path("/")
    for part in path.parts[1:]:
        current = current / part
        target = upper / current.relative_to("/")
        if target.exists():
            continue
        target.mkdir()
        packaged = stock / current.relative_to("/")
        if packaged.exists() or current.exists():
            st = (packaged if packaged.exists() else current).stat()
            os.chmod(target, st.st_mode & 0o7777)
            os.chown(target, st.st_uid, st.st_gid)
        else:
            os.chmod(target, 0o700 if current.name == ".ssh" else 0o755)
            os.chown(target, uid if current.name in (".ssh", OPS_USER) else 0,
                     uid if current.name in (".ssh", OPS_USER) else 0)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_ours(pid: int, h: LabHost) -> bool:
    """True when `pid` is still the lab's process for `h` (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(Path(h.dir) / "spec.json").encode() in cmdline


def _wait_gone(pid: int | None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pid and _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # reap if it is our own child
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)


def _answers(address: str, port: int, timeout: float = 2.5) -> bool:
    """True when a TCP service on address:port sends a greeting line (Debian's Sendmail pauses 1 s first)."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            return bool(sock.recv(64))
    except OSError:
        return False
