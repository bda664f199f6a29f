"""The Exim driver (Exim 4.96, Debian packaging): `playbooks/exim.yaml` plus what only Exim knows.

- which files are live (mail-domain.md 4.1): a hand-written /etc/exim4/exim4.conf shadows everything;
  otherwise update-exim4.conf.conf with the conf.d tree (dc_use_split_config='true') or the template;
- validation: the candidate's complete configuration (update-exim4.conf run on the private copy, or the
  copy's exim4.conf), `exim4 -C FILE -bV`, then a fake SMTP session from an outside address with
  `exim4 -C FILE -bh ADDRESS` (mail-domain.md 4.4: nothing delivered, nothing logged);
- the probe's context: the primary hostname as the local domain and the literal domains of
  local_domains and relay_to_domains (a probe domain in them proves nothing);
- trusted_networks in Exim host-list notation.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from remediate.errors import ValidationError
from remediate.model import Finding, Host, ProbeContext
from remediate.mta.base import Facts, PlaybookDriver, Simulation
from remediate.mta.exim import rules
from remediate.mta.exim.authall import audit_auth_all, require_auth_all
from remediate.mta.exim.syntax import exim_list_notation
from remediate.mta.playbook import Policy, Transform, fill
from remediate.probe import HELO
from remediate.probe import simulate as simulated_session
from remediate.shell import FileStat, Shell
from remediate.verdict import describe, judge

SPLIT = "dc_use_split_config"

TRANSFORMS: Mapping[str, Transform] = MappingProxyType({
    "restrict_relay_nets": rules.restrict_relay_nets,
    "restrict_relay_domains": rules.restrict_relay_domains,
    "disable_open_authenticators": rules.disable_open_authenticators,
    "restrict_acl_hosts": rules.restrict_acl_hosts,
    "ensure_relay_gate": rules.ensure_relay_gate,
    "require_auth_all": require_auth_all,
})
ABSENT = FileStat(0o644, 0, 0, 0, 0)


class EximDriver(PlaybookDriver):
    name: ClassVar[str] = "exim"
    transforms: ClassVar[Mapping[str, Transform]] = TRANSFORMS
    simulate_options: ClassVar[frozenset[str]] = frozenset({"client"})
    listeners: ClassVar[tuple[str, ...]] = ("exim4", "exim")

    def discover(self, shell: Shell) -> bool:
        files = self.playbook.files
        return shell.exists(files["update_conf"]) or shell.exists(files["exim4_conf"])

    def read(self, shell: Shell) -> Facts:
        """Like the default, but a file the host does not have reads as empty (and stays so)."""
        pb = self.playbook
        present = {name for name, path in pb.files.items() if shell.exists(path)}
        raw = {name: shell.read(path) if name in present else b"" for name, path in pb.files.items()}
        stats = {name: shell.stat(path) if name in present else ABSENT for name, path in pb.files.items()}
        derived = {path: (shell.read(path), shell.stat(path)) for path in pb.derived if shell.exists(path)}
        outputs = {name: shell.run(argv, check=False).out.strip() for name, argv in pb.facts.items()}
        return Facts(raw, stats, outputs, derived)

    def live_files(self, facts: Facts) -> frozenset[str]:
        return live(facts.texts())

    def variables(self, host: Host) -> dict[str, Any]:
        return {**super().variables(host),
                "trusted_networks": [exim_list_notation(n) for n in host.trusted_networks]}

    def audit(self, texts: Mapping[str, str], host: Host,
              outputs: Mapping[str, str] = MappingProxyType({})) -> tuple[Finding, ...]:
        chosen = {name: texts[name] for name in self.playbook.files if name in live(texts)}  # in reading order
        paths = {name: self.playbook.files[name] for name in chosen}
        found = rules.audit(chosen, paths, trusted_networks=self.variables(host)["trusted_networks"],
                            policy=host.policy)
        if host.policy == "auth-all":
            configs = {n: t for n, t in chosen.items() if n not in ("update_conf", "listmacros")}
            found += audit_auth_all(configs, paths)
        return tuple(found)

    def probe_context(self, host: Host, facts: Facts | None) -> ProbeContext:
        if facts is None:
            return ProbeContext(local_domain=host.mail_domain)
        lists = dict(_domainlists(facts.outputs.get("domains", "")))
        return ProbeContext(local_domain=host.mail_domain or facts.outputs.get("primary_hostname") or None,
                            served=tuple((name, lists.get(name, ())) for name in ("relay_to_domains",
                                                                                   "local_domains")))

    # ------------------------------------------------------------------ prove
    def validate(self, shell: Shell, facts: Facts, cand: Any, host: Host, policy: Policy) -> Simulation:
        """The candidate's complete configuration in a private copy: generated, checked with -bV, then a
        fake session from outside. ValidationError when it cannot be built or is invalid."""
        with shell.tempdir("remediate-validate") as tmp:
            self.write_copy(shell, facts, cand, tmp)
            if "exim4_conf" in self.live_files(facts):
                config = f"{tmp}/exim4.conf"
            else:
                config = f"{tmp}/remediate.autogenerated"
                built = shell.run(["update-exim4.conf", "--confdir", tmp, "--output", config], check=False)
                if built.rc != 0:
                    raise ValidationError(f"{host.name}: update-exim4.conf cannot build the candidate: "
                                          f"{built.err.strip()[-400:]}")
            checked = shell.run(["exim4", "-C", config, "-bV"], check=False)
            if checked.rc != 0:
                raise ValidationError(f"{host.name}: `exim4 -C <candidate> -bV` exited {checked.rc}: "
                                      f"{(checked.err or checked.out).strip()[-400:]}")
            return self.simulate(shell, config, host, policy)

    def simulate(self, shell: Shell, directory: str, host: Host, policy: Policy) -> Simulation:
        """`exim4 -bh` against the configuration file `directory` (here: a file), from the outside client."""
        sim = self.playbook.simulate
        if sim is None:
            raise NotImplementedError("the exim playbook has no simulate block")
        client = sim.options.get("client", "203.0.113.9")
        hostname = shell.run(["exim4", "-C", directory, "-bP", "-n", "primary_hostname"], check=False).out.strip()
        chan = shell.open_stream(fill(sim.argv, config=directory, client=client))
        try:
            result = simulated_session(_Preamble(chan), xclient_addr=None, probe_domain=host.probe_domain,
                                       local_domain=host.mail_domain or hostname or None, helo=HELO)
        finally:
            chan.close()
        verdict = judge(result, expect_local=policy.expect_local, source="simulation")
        return Simulation(verdict, describe(result, verdict), result)


def live(texts: Mapping[str, str]) -> frozenset[str]:
    """The files Exim reads today, given every file's text ("" when the host does not have it): a
    hand-written exim4.conf alone; else update-exim4.conf.conf with the conf.d files (split) or the template."""
    present = {name for name, text in texts.items() if text}
    if "exim4_conf" in present:
        return frozenset({"exim4_conf"})
    split = rules.update_conf_value(texts.get("update_conf", ""), SPLIT) == "true"
    config = {"listmacros", "rcpt_acl", "authenticators"} if split else {"template"}
    return frozenset(({"update_conf"} | config) & present)


class _Preamble:
    """`exim -bh` prints `**** SMTP testing session ...` lines before the banner: read past them."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.buffer, self.started = stream, b"", False

    def sendall(self, data: bytes) -> Any:
        return self.stream.sendall(data)

    def settimeout(self, timeout: float | None) -> Any:
        return self.stream.settimeout(timeout)

    def recv(self, n: int) -> bytes:
        while not self.started:
            chunk = self.stream.recv(4096)
            if not chunk:
                return b""
            self.buffer += chunk
            while b"\n" in self.buffer and not self.buffer[:1].isdigit():
                self.buffer = self.buffer.split(b"\n", 1)[1]
            self.started = self.buffer[:1].isdigit()
        if self.buffer:
            out, self.buffer = self.buffer[:n], self.buffer[n:]
            return out
        return bytes(self.stream.recv(n))


def _domainlists(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """`exim4 -bP +local_domains ...` lines -> (name, literal domains); patterns, lookups and `@` are left out."""
    out = []
    for line in text.splitlines():
        head, sep, value = line.partition("=")
        if not sep or not head.split():
            continue
        items = [i.strip() for i in value.split(":")]
        literal = tuple(i for i in items if i and not any(c in i for c in "@*;$+/!^\\"))
        out.append((head.split()[-1], literal))
    return out
