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

from remediate.model import Finding, Host, Network, ProbeContext, SmtpService
from remediate.mta.base import Candidate, Facts, PlaybookDriver, Simulation
from remediate.mta.playbook import Policy, Transform, fill
from remediate.mta.postfix import rules
from remediate.probe import HELO
from remediate.probe import simulate as simulated_session
from remediate.shell import Op, Read, Run, Shell
from remediate.smtp import ProbeResult
from remediate.verdict import Verdict, describe, judge, merged

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
        """The playbook's files and facts, the facts named by parameter (`settings`: relay_restrictions,
        myhostname, sasl (type, path, config path: three lines); `domains`: mydestination, relay_domains,
        expanded), plus `sasl_mechanisms`: the Cyrus SASL mech_list smtpd uses ("" when SASL is not Cyrus or
        no mech_list is set: every installed mechanism)."""
        defaults = [Read(_sasl_conf(directory, ""), missing_ok=True) for directory in CYRUS_PATH]
        facts, guessed = self.read_with(shell, defaults)   # where Cyrus looks unless told otherwise
        settings = [*facts.outputs.get("settings", "").split("\n"), "", "", "", "", ""][:5]
        domains = [*facts.outputs.get("domains", "").split("\n"), "", ""][:2]
        named = {"relay_restrictions": settings[0].strip(), "myhostname": settings[1].strip(),
                 "sasl": "\n".join(line.strip() for line in settings[2:5]),
                 "mydestination": domains[0].strip(), "relay_domains": domains[1].strip()}
        kind, path, dirs = named["sasl"].split("\n")
        mechanisms = ""
        if kind.strip() == "cyrus":
            confs = [_sasl_conf(directory, path) for directory in (dirs.split(":") if dirs.strip() else CYRUS_PATH)]
            reads = [Read(conf, missing_ok=True) for conf in confs]
            found = [data for data in (guessed if reads == defaults else shell.gather(reads)) if data is not None]
            if found:
                mechanisms = rules.sasl_mechanisms(found[0].decode("utf-8", "replace"))
        return replace(facts, outputs={**facts.outputs, **named, "sasl_mechanisms": mechanisms})

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
            own_domains=own_domains(local, out.get("mydestination", "")),
            services=smtp_services(facts.text("master_cf")) if "master_cf" in facts.raw else ())

    def validate(self, shell: Shell, facts: Facts, cand: Candidate, host: Host, policy: Policy) -> Simulation:
        """The base validation (private copy, validate commands, simulated session), with the validate commands
        and what the simulation reads of the copy gathered in the round trip that makes the copy (an op both
        need, `postconf -P`, runs once)."""
        def ops(tmp: str) -> list[Op]:
            return [*self.validate_ops(tmp), *_simulation_inputs(tmp)]

        with self.private_copy(shell, facts, cand, then=ops) as copy:
            self.judge_validation(shell, copy.path, host, copy.results)
            inputs = copy.results[len(self.playbook.validate):]
            return self._simulate(shell, copy.path, host, policy, inputs)

    def simulate(self, shell: Shell, directory: str, host: Host, policy: Policy) -> Simulation:
        """A real smtpd against `directory` over a pipe, from a simulated outside address (XCLIENT): the
        playbook's `service` (smtp/inet), then every other smtpd service `smtp_services` finds in its
        master.cf, each with its own `-o` overrides (TLS wrapper mode off: the pipe is plaintext); one verdict."""
        return self._simulate(shell, directory, host, policy, shell.gather(_simulation_inputs(directory)))

    def _simulate(self, shell: Shell, directory: str, host: Host, policy: Policy, inputs: list[Any]) -> Simulation:
        sim = self.playbook.simulate
        if sim is None:
            raise NotImplementedError("the postfix playbook has no simulate block")
        services, values, master_cf = inputs
        overrides: dict[str, list[str]] = {}
        for line in services.out.splitlines():
            key, sep, value = line.partition(" = ")
            if sep and key.count("/") == 2:
                label, _, name = key.rpartition("/")
                overrides.setdefault(label, []).append(f"{name}={value}")
        restrictions, myhostname, mydestination = [*values.out.splitlines(), "", "", ""][:3]
        local = host.mail_domain or myhostname.strip()
        others = smtp_services(master_cf.decode("utf-8", "surrogateescape"))

        def session(label: str, expect_local: str) -> tuple[ProbeResult, Verdict]:
            name, _, kind = label.partition("/")
            argv = fill(sim.argv, dir=directory, service=name, type=kind)
            for option in overrides.get(label, []):
                argv += ["-o", option]
            chan = shell.open_stream([*argv, "-o", "smtpd_tls_wrappermode=no"])
            try:
                result = simulated_session(chan, xclient_addr=sim.options.get("xclient_addr", "203.0.113.9"),
                                           probe_domain=host.probe_domain, local_domain=local,
                                           own_domains=own_domains(local, mydestination), helo=HELO,
                                           timeout=host.probe_timeout)
            finally:
                chan.close()
            return result, judge(result, deferral=_deferral(restrictions), expect_local=expect_local,
                                 source="simulation")

        result, verdict = session(sim.options.get("service", "smtp/inet"), policy.expect_local)
        transcript = describe(result, verdict)
        for service in others:
            other_result, other = session(f"{service.name}/inet", "accept")
            verdict = merged(verdict, service.label, other, submission=service.submission, source="simulation")
            transcript += f" | {service.label}: {describe(other_result, other)}"
        return Simulation(verdict, transcript, result)


def _sasl_conf(directory: str, name: str) -> str:
    """Where Cyrus SASL reads the configuration of application `name` (smtpd_sasl_path; empty: smtpd)."""
    return f"{directory.rstrip('/')}/{name.strip() or 'smtpd'}.conf"


def _simulation_inputs(directory: str) -> list[Op]:
    """What the simulation reads of the configuration in `directory`: every service's -o overrides, the
    parameters the judgement needs, master.cf."""
    return [Run(("postconf", "-c", directory, "-P"), check=False),
            Run(("postconf", "-c", directory, "-xh", "smtpd_relay_restrictions", "myhostname", "mydestination"),
                check=False),
            Read(f"{directory}/master.cf")]


#: master.cf service names that are ports (services(5)), and which are for mail clients (RFC 6409, RFC 8314)
_PORTS = {"smtp": 25, "submission": 587, "smtps": 465, "submissions": 465}
_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


def smtp_services(master_cf: str) -> tuple[SmtpService, ...]:
    """The smtpd `inet` services of master.cf reachable from outside, except port 25 (probed anyway, also when
    postscreen fronts it): their port (`name` is a service, a port or `address:port`), implicit TLS
    (`-o smtpd_tls_wrappermode=yes`), and whether it is a submission port (587, 465, or `-o
    smtpd_sasl_auth_enable=yes` on another port)."""
    found = []
    for service in rules.parse_services(master_cf):
        host, _, name = service.name.rpartition(":")
        # a numeric service name is a port only in ASCII digits within 1-65535 (what getservbyname/atoi take)
        port = _PORTS.get(name) or (int(name) if name.isascii() and name.isdigit() and 0 < int(name) < 65536
                                    else None)
        if not service.is_smtpd or service.type != "inet" or port in (None, 25) or host.startswith(_LOOPBACK):
            continue
        options = {o.name: o.value.strip().lower() for o in service.overrides}
        wrapped = options.get("smtpd_tls_wrappermode") in ("yes", "true")
        submission = port in (465, 587) or options.get("smtpd_sasl_auth_enable") in ("yes", "true")
        found.append(SmtpService(service.name, int(port or 0), wrapped, submission))
    return tuple(found)


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
