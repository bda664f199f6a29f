"""The Sendmail driver (8.17, Debian packaging): `playbooks/sendmail.yaml` plus what only Sendmail knows.

- validation: m4 of the candidate sendmail.mc in the private copy (refused on any `*** ERROR`/`*** WARNING`:
  Debian's Makefile would install a broken .cf, mail-domain.md 5.3), its maps built there with makemap and
  its /etc/mail paths pointed at the copy, `sendmail -C CF -bC`, then the relay decision for an outside
  client with `-bt` (`check_rcpt` per relay form, and as an ANONYMOUS-authenticated client when the
  candidate offers ANONYMOUS: TrustAuthMech);
- activation: m4 output written atomically through the shell (never Debian's Makefile), makemap, SIGHUP
  to the daemon (it re-executes and rereads sendmail.cf);
- the probe's context: local-host-names' first name as the local domain; To: RELAY domains as served.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from remediate.errors import ValidationError
from remediate.model import Finding, Host, ProbeContext
from remediate.mta.base import Facts, PlaybookDriver, Simulation
from remediate.mta.playbook import Policy, Transform, fill
from remediate.mta.sendmail import rules
from remediate.probe import RECIPIENT, SENDER, extra_forms, relay_forms
from remediate.shell import Shell
from remediate.smtp import ProbeResult, RelayAttempt, Reply
from remediate.verdict import describe, judge

PIDFILE = "/run/sendmail/mta/sendmail.pid"
TRANSFORMS: Mapping[str, Transform] = {
    "remove_promiscuous_relay": rules.remove_promiscuous_relay,
    "remove_anonymous_auth": rules.remove_anonymous_auth,
    "ensure_auth_options": rules.ensure_auth_options,
    "restrict_connect_relay": rules.restrict_connect_relay,
}
_RETURNS = re.compile(r"^check_rcpt\s+returns:\s*(.*)$", re.M)
_ERROR = re.compile(r'\$# error .*?\$: "?(\d{3})[ "]?(.*?)"?$')


class SendmailDriver(PlaybookDriver):
    name: ClassVar[str] = "sendmail"
    transforms: ClassVar[Mapping[str, Transform]] = TRANSFORMS
    simulate_options: ClassVar[frozenset[str]] = frozenset({"client"})
    listeners: ClassVar[tuple[str, ...]] = ("sendmail-mta", "sendmail")
    validation_steps: ClassVar[tuple[str, ...]] = (
        "m4 '{private copy}/sendmail.mc' > '{private copy}/sendmail.cf'",
        "makemap hash '{private copy}/access'", "sendmail-mta -C '{private copy}/sendmail.cf' -bC")
    activation_steps: ClassVar[tuple[str, ...]] = (
        "m4 /etc/mail/sendmail.mc > /etc/mail/sendmail.cf (written atomically, mode and owner kept)",
        "makemap hash /etc/mail/access < /etc/mail/access", f"kill -HUP $(cat {PIDFILE})")

    def variables(self, host: Host) -> dict[str, Any]:
        return {**super().variables(host), "trusted_networks": [str(n) for n in host.trusted_networks]}

    def audit(self, texts: Mapping[str, str], host: Host,
              outputs: Mapping[str, str] = MappingProxyType({})) -> tuple[Finding, ...]:
        names = ("mc", "access")
        return tuple(rules.audit({n: texts[n] for n in names}, {n: self.playbook.files[n] for n in names},
                                 trusted_networks=self.variables(host)["trusted_networks"], policy=host.policy))

    def probe_context(self, host: Host, facts: Facts | None) -> ProbeContext:
        if facts is None:
            return ProbeContext(local_domain=host.mail_domain)
        names = [ln.strip() for ln in facts.text("local_host_names").splitlines() if ln.strip()[:1].isalnum()]
        return ProbeContext(local_domain=host.mail_domain or (names[0] if names else None),
                            served=(("access To: RELAY", rules.served_domains(facts.text("access"))),))

    # ------------------------------------------------------------------ generate
    def _generate(self, shell: Shell, mc: str, host: Host) -> bytes:
        """m4 of `mc`; ValidationError on any m4 error or warning."""
        made = shell.run(["m4", mc], check=False)
        if made.rc != 0 or "*** ERROR" in made.err or "*** WARNING" in made.err:
            raise ValidationError(f"{host.name}: m4 refuses the candidate sendmail.mc: {made.err.strip()[-400:]}")
        return made.stdout

    def _maps(self, shell: Shell, directory: str) -> None:
        shell.run(["makemap", "hash", f"{directory}/access"], input=shell.read(f"{directory}/access"))

    def validate(self, shell: Shell, facts: Facts, cand: Any, host: Host, policy: Policy) -> Simulation:
        live = self.playbook.config_dir
        with self.private_copy(shell, facts, cand) as copy:
            tmp = copy.path
            cf = self._generate(shell, f"{tmp}/sendmail.mc", host).replace(f"{live}/".encode(), f"{tmp}/".encode())
            shell.write_atomic(f"{tmp}/sendmail.cf", cf, mode=0o644, uid=0, gid=0)
            self._maps(shell, tmp)
            checked = shell.run(["sendmail-mta", "-C", f"{tmp}/sendmail.cf", "-bC"], check=False)
            if checked.rc != 0:
                raise ValidationError(f"{host.name}: `sendmail -C <candidate> -bC` exited {checked.rc}: "
                                      f"{(checked.err or checked.out).strip()[-400:]}")
            return self.simulate(shell, f"{tmp}/sendmail.cf", host, policy)

    def simulate(self, shell: Shell, directory: str, host: Host, policy: Policy) -> Simulation:
        """The relay decision of the configuration file `directory` (a .cf) for an outside client, by -bt."""
        sim = self.playbook.simulate
        assert sim is not None
        client = sim.options.get("client", "203.0.113.9")
        cf = shell.read(directory).decode("utf-8", "replace")
        mechs = tuple(next((ln.split("=", 1)[1].split() for ln in cf.splitlines()
                            if ln.startswith("O AuthMechanisms=")), []))
        local = host.mail_domain or next((ln.split()[0][2:] for ln in cf.splitlines() if ln.startswith("Cw")), "")
        forms = [(n, "" if n == 1 else f"{SENDER}@[{client}]", r)
                 for n, _, r in relay_forms(host.probe_domain, "outside.example", None)]
        forms += list(extra_forms(host.probe_domain, (local,) if local else ()))
        asks: list[tuple[int, str, str, str | None]] = [(n, m, r, None) for n, m, r in forms]
        asks.append((0, "", f"postmaster@{local}", None))
        if "ANONYMOUS" in mechs:
            asks.append((2, "", f"{RECIPIENT}@{host.probe_domain}", "ANONYMOUS"))
        script = "".join(f".D{{client_addr}}{client}\n.D{{client_name}}outside.example\n"
                         f".D{{auth_type}}{auth or ''}\n.D{{mail_from}}<{mail}>\ncheck_rcpt <{rcpt}>\n"
                         for _, mail, rcpt, auth in asks)
        out = shell.run(fill(sim.argv, config=directory), input=script.encode(), check=False).out
        answers = [_reply(m) for m in _RETURNS.findall(out)]
        if len(answers) != len(asks):
            raise ValidationError(f"{host.name}: sendmail -bt answered {len(answers)} of {len(asks)} checks")
        attempts = [RelayAttempt(mail, rcpt, Reply(250, ("ok",)), reply, False, n)
                    for (n, mail, rcpt, _), reply in zip(asks, answers, strict=True)]
        relay = tuple(a for a, ask in zip(attempts, asks, strict=True) if ask[0] and ask[3] is None)
        anon = attempts[-1] if "ANONYMOUS" in mechs else None
        result = ProbeResult("simulation", 0, Reply(220, ("sendmail -bt",)), client, mechs, False, None,
                             Reply(235, ("offered",)) if anon else None, relay,
                             attempts[len(forms)], (), anon, 0, Reply(250, ("EHLO",)))
        verdict = judge(result, expect_local=policy.expect_local, source="simulation")
        return Simulation(verdict, describe(result, verdict), result)

    # ------------------------------------------------------------------ activate
    def activate(self, shell: Shell) -> None:
        """m4 -> sendmail.cf (atomically, mode and owner kept), makemap -> access.db, SIGHUP the daemon."""
        files = self.playbook.files
        live = self.playbook.config_dir
        made = shell.run(["m4", files["mc"]])
        st = shell.stat(f"{live}/sendmail.cf")
        shell.write_atomic(f"{live}/sendmail.cf", made.stdout, mode=st.mode, uid=st.uid, gid=st.gid)
        self._maps(shell, live)
        shell.signal(PIDFILE, "HUP")


def _reply(answer: str) -> Reply:
    """A -bt `check_rcpt returns:` line as the reply an SMTP client would get."""
    error = _ERROR.search(answer.strip())
    if error:
        return Reply(int(error.group(1)), (error.group(2),))
    if answer.strip().startswith("$# discard"):
        return Reply(250, ("discarded",))
    return Reply(250, (answer.strip(),))
