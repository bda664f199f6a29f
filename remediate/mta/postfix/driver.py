"""The Postfix driver: `playbooks/postfix.yaml` plus what only Postfix knows.

- audit: `rules.audit` over main.cf and master.cf (the parameter and line behind each finding);
- the simulated outside session: a real `smtpd -S` over a pipe against the private copy, with the
  service's master.cf `-o` overrides and XCLIENT posing as an outside address (mail-domain.md 3.7);
- the probe's context: `myhostname` as the local domain, `defer_unauth_destination` (Debian's default)
  making a 4.7.1 deferral count as a refusal (mail-domain.md 3.1), and the domains of `mydestination`
  and `relay_domains` (a probe domain in them proves nothing);
- `trusted_networks` rendered in mynetworks notation (IPv6 in brackets, postconf(5) "mynetworks").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, ClassVar

from remediate.model import Finding, Host, Network, ProbeContext
from remediate.mta.base import Facts, PlaybookDriver, Simulation
from remediate.mta.playbook import Policy, Transform, fill
from remediate.mta.postfix import rules
from remediate.probe import HELO
from remediate.probe import simulate as simulated_session
from remediate.shell import Shell
from remediate.verdict import describe, judge

#: where Cyrus SASL looks for smtpd.conf when cyrus_sasl_config_path is empty (Debian's build first)
CYRUS_PATH = ("/etc/postfix/sasl", "/usr/lib/sasl2", "/etc/sasl2")

TRANSFORMS: Mapping[str, Transform] = MappingProxyType({
    "ensure_parameter": rules.ensure_parameter,
    "secure_relay_restrictions": rules.secure_relay_restrictions,
    "secure_recipient_restrictions": rules.secure_recipient_restrictions,
    "restrict_mynetworks": rules.restrict_mynetworks,
    "ensure_noanonymous": rules.ensure_noanonymous,
    "require_auth_all": rules.require_auth_all,
    "remove_unsafe_overrides": rules.remove_unsafe_overrides,
})


def mynetworks_notation(network: Network) -> str:
    """A network as postconf(5) mynetworks writes it: IPv6 in brackets (`[2001:db8::]/32`)."""
    return f"[{network.network_address}]/{network.prefixlen}" if network.version == 6 else str(network)


def literal_domains(value: str) -> tuple[str, ...]:
    """The literal domains of a Postfix domain list (lookup tables and files are left out)."""
    return tuple(item for item in value.replace(",", " ").split() if ":" not in item and "/" not in item)


class PostfixDriver(PlaybookDriver):
    name: ClassVar[str] = "postfix"
    transforms: ClassVar[Mapping[str, Transform]] = TRANSFORMS
    simulate_options: ClassVar[frozenset[str]] = frozenset({"service", "xclient_addr"})
    listeners: ClassVar[tuple[str, ...]] = ("master",)

    def variables(self, host: Host) -> dict[str, Any]:
        return {**super().variables(host),
                "trusted_networks": [mynetworks_notation(n) for n in host.trusted_networks]}

    def read(self, shell: Shell) -> Facts:
        """The playbook's files and facts, plus `sasl_mechanisms`: the Cyrus SASL mech_list smtpd uses
        ("" when SASL is not Cyrus or no mech_list is set: every installed mechanism)."""
        facts = super().read(shell)
        kind, path, dirs = ([*facts.outputs.get("sasl", "").splitlines(), "", "", ""])[:3]
        mechanisms = ""
        if kind.strip() == "cyrus":
            for directory in (dirs.split(":") if dirs.strip() else CYRUS_PATH):
                conf = f"{directory.rstrip('/')}/{path.strip() or 'smtpd'}.conf"
                if shell.exists(conf):
                    mechanisms = rules.sasl_mechanisms(shell.read(conf).decode("utf-8", "replace"))
                    break
        return replace(facts, outputs={**facts.outputs, "sasl_mechanisms": mechanisms})

    def audit(self, texts: Mapping[str, str], host: Host,
              outputs: Mapping[str, str] = MappingProxyType({})) -> tuple[Finding, ...]:
        found = rules.audit(texts["main_cf"], texts["master_cf"],
                            trusted_networks=self.variables(host)["trusted_networks"], policy=host.policy,
                            mechanisms=outputs.get("sasl_mechanisms", ""))
        paths = {"main.cf": self.playbook.files["main_cf"], "master.cf": self.playbook.files["master_cf"]}
        return tuple(_located(f, paths) for f in found)

    def probe_context(self, host: Host, facts: Facts | None) -> ProbeContext:
        if facts is None:
            return ProbeContext(local_domain=host.mail_domain)
        out = facts.outputs
        local = host.mail_domain or out.get("myhostname") or None
        return ProbeContext(
            local_domain=local,
            deferral=_deferral(out.get("relay_restrictions", "")),
            served=(("relay_domains", literal_domains(out.get("relay_domains", ""))),
                    ("mydestination", literal_domains(out.get("mydestination", "")))),
            own_domains=own_domains(local, out.get("mydestination", "")))

    def simulate(self, shell: Shell, directory: str, host: Host, policy: Policy) -> Simulation:
        """A real smtpd against `directory` over a pipe, from a simulated outside address (XCLIENT)."""
        sim = self.playbook.simulate
        if sim is None:
            raise NotImplementedError("the postfix playbook has no simulate block")
        service = sim.options.get("service", "smtp/inet")
        overrides = shell.run(["postconf", "-c", directory, "-P", service], check=False).out
        argv = fill(sim.argv, dir=directory)
        for line in overrides.splitlines():
            name, sep, value = line.partition(" = ")
            if sep:
                argv += ["-o", f"{name.rsplit('/', 1)[-1]}={value}"]
        values = shell.run(["postconf", "-c", directory, "-xh", "smtpd_relay_restrictions", "myhostname",
                            "mydestination"], check=False).out.splitlines()
        restrictions, myhostname, mydestination = [*values, "", "", ""][:3]
        local = host.mail_domain or myhostname.strip()
        chan = shell.open_stream(argv)
        try:
            result = simulated_session(chan, xclient_addr=sim.options.get("xclient_addr", "203.0.113.9"),
                                       probe_domain=host.probe_domain, local_domain=local,
                                       own_domains=own_domains(local, mydestination), helo=HELO)
        finally:
            chan.close()
        verdict = judge(result, deferral=_deferral(restrictions),
                        expect_local=policy.expect_local, source="simulation")
        return Simulation(verdict, describe(result, verdict), result)


def own_domains(local: str | None, mydestination: str) -> tuple[str, ...]:
    """Domains the host serves, to forge a sender in: the local domain, then mydestination's literal
    domains (not `localhost` names)."""
    names = [local] if local else []
    names += [d for d in literal_domains(mydestination) if not d.lower().startswith("localhost") and "$" not in d]
    return tuple(dict.fromkeys(n.lower() for n in names))


def _deferral(relay_restrictions: str) -> str | None:
    """Debian's default `defer_unauth_destination` answers unauthorised relay with 454 4.7.1 (postconf(5))."""
    return "defer_unauth_destination" if "defer_unauth_destination" in relay_restrictions else None


def _located(finding: Finding, paths: Mapping[str, str]) -> Finding:
    """The finding with its file named by full path."""
    return replace(finding, file=paths.get(finding.file or "", finding.file))
