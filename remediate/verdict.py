"""The verdict on what a probe saw: secure, vulnerable or inconclusive, with the reasons.

`judge(result)` turns a `ProbeResult` (from `remediate.smtp`, filled by `remediate.probe`) into a
`Verdict`, decided from reply *classes* and enhanced status codes, never reply strings. Pure: no I/O, no
logging. Security findings are `open_relay` and `anonymous_auth` (either makes a host vulnerable); health
findings are `inbound_refused` / `inbound_tempfail` (mail for the host's own domain refused with 5xx / 4xx)
and `service_broken` (a greeting, then the session dies at EHLO): they are reported but do not decide the
verdict. Anything that could not be proven keeps a host from being secure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from remediate.model import Finding, Status
from remediate.smtp import EXTRA_FORMS, ProbeResult, RelayAttempt, Reply

OPEN_RELAY = "open_relay"
ANONYMOUS_AUTH = "anonymous_auth"
INBOUND_REFUSED = "inbound_refused"
INBOUND_TEMPFAIL = "inbound_tempfail"
SERVICE_BROKEN = "service_broken"
SUBMISSION_WITHOUT_AUTH = "submission_without_auth"
#: the findings that make a host vulnerable (the others say it is unhealthy)
SECURITY = frozenset({OPEN_RELAY, ANONYMOUS_AUTH})


@dataclass(frozen=True, slots=True)
class Verdict:
    """`status` is secure, vulnerable or inconclusive; `findings` carry their own evidence; `reasons`
    are every sentence behind the verdict (findings first, then doubts, then what was proven)."""

    status: Status
    findings: tuple[Finding, ...]
    reasons: tuple[str, ...]
    local_ok: bool | None

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.findings)


def _classify(attempt: RelayAttempt, deferral: str | None) -> tuple[bool, str, Reply | None]:
    """(refused, why, deciding reply) for an attempt that was not accepted; decided on reply classes only."""
    mail, rcpt = attempt.mail_reply, attempt.rcpt_reply
    if attempt.dropped or mail is None:
        return False, "the connection dropped or timed out", rcpt or mail
    if mail.code == 530:
        return True, "MAIL FROM needs authentication", mail
    if mail.klass == 5:
        return True, "MAIL FROM refused", mail
    if mail.klass != 2:
        return False, "MAIL FROM got a reply that proves nothing", mail
    if rcpt is None:
        return False, "no RCPT reply", None
    if rcpt.klass == 5:
        return True, "RCPT refused", rcpt
    if rcpt.klass == 4 and deferral and (rcpt.enhanced == "4.7.1" or (rcpt.code == 454 and rcpt.enhanced is None)):
        return True, f"RCPT deferred, counted as refused because the host uses {deferral}", rcpt
    return False, "RCPT got a reply that proves nothing", rcpt


def _forms(numbers: list[int]) -> str:
    """`[1, 2, 3, 6, 18]` -> "forms 1-3, 6, 18 (postmaster@ a foreign domain)"."""
    runs: list[list[int]] = []
    named = [EXTRA_FORMS[n] for n in dict.fromkeys(numbers) if n in EXTRA_FORMS]
    for n in dict.fromkeys(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs)
    return ("form " if len(set(numbers)) == 1 else "forms ") + text + (f" ({'; '.join(named)})" if named else "")


def _judge_anonymous(result: ProbeResult, evidence: dict[str, list[str]], facts: list[str]) -> None:
    """ANONYMOUS advertised (plain or after STARTTLS) is the finding Nessus 54581 reports."""
    where = [w for w, mechs in (("in plaintext", result.ehlo_auth), ("after STARTTLS", result.tls_auth or ()))
             if "ANONYMOUS" in mechs]
    if where:
        tried = result.anonymous_attempt
        outcome = ("the attempt did not complete" if tried is None else
                   f"AUTH ANONYMOUS was {'accepted' if tried.code == 235 else 'refused'} ({tried})")
        evidence[ANONYMOUS_AUTH] = [f"ANONYMOUS is advertised {' and '.join(where)} (what Nessus 54581 flags); "
                                    f"{outcome}"]
    elif result.ehlo is not None:
        checked = "in plaintext" + (" or after STARTTLS" if result.tls_auth is not None else "")
        skipped = result.tls_offered and result.tls_auth is None
        unchecked = "; after STARTTLS was not checked" if skipped else ""
        facts.append(f"ANONYMOUS is not advertised {checked}{unchecked}")


def _judge_local(result: ProbeResult, expect_local: str, evidence: dict[str, list[str]], facts: list[str],
                 doubts: list[str]) -> bool | None:
    """Whether mail for the host's own domain was treated as the policy wants (None: not checked). Under
    `accept`, a 5xx or 4xx is a health finding (whether it is a regression is the caller's comparison with
    the host's baseline); a drop or a reply that proves nothing is a doubt."""
    local_ok, local = None, result.local_attempt
    if local is not None:
        domain = local.rcpt_to.rpartition("@")[2]
        refused = _classify(local, None)[0] if not local.accepted else False
        local_ok = local.accepted if expect_local == "accept" else refused
        reply = local.rcpt_reply or local.mail_reply or "connection dropped"
        decisive = local.rcpt_reply if local.mail_reply and local.mail_reply.klass == 2 else local.mail_reply
        if expect_local == "accept" and local_ok:
            facts.append(f"inbound mail for {domain} is accepted ({reply})")
        elif expect_local == "accept" and decisive is not None and decisive.klass in (4, 5) and not local.dropped:
            code = INBOUND_REFUSED if decisive.klass == 5 else INBOUND_TEMPFAIL
            what = "refused" if decisive.klass == 5 else "temporarily refused"
            evidence.setdefault(code, []).append(f"inbound mail for {domain} (from outside, unauthenticated) is "
                                                 f"{what}: {reply}")
        elif expect_local == "accept":
            doubts.append(f"inbound mail for {domain} could not be checked ({reply})")
        elif local_ok:
            facts.append(f"unauthenticated mail for {domain} is refused, as the policy requires ({reply})")
        else:
            doubts.append(f"unauthenticated mail for {domain} was not refused as policy requires ({reply})")
    return local_ok


def _judge_service(result: ProbeResult, evidence: dict[str, list[str]], doubts: list[str]) -> None:
    """A port that takes the connection but never greets, or greets and then fails EHLO, is broken."""
    where = f"{result.address}:{result.port}"
    if result.banner is None:
        doubts.append(f"no SMTP banner from {where}")
        if result.connected:
            evidence[SERVICE_BROKEN] = [f"{where} accepts connections but never greets: the service is broken "
                                        "(a fatal error ends every session, or it hangs)"]
    elif result.banner.klass == 2 and result.ehlo is None and result.errors:
        evidence[SERVICE_BROKEN] = [f"{where} greets ({result.banner}) and then fails the session at EHLO: the "
                                    "service is broken (a fatal configuration error ends every session)"]


def _discount_relay(result: ProbeResult, evidence: dict[str, list[str]], doubts: list[str], trusted: bool,
                    served: tuple[str, str] | None) -> None:
    """Relay results that prove nothing: from a network the host trusts, or to a domain it serves."""
    if trusted:  # the host relays for us by design: an accepted relay proves nothing either
        evidence.pop(OPEN_RELAY, None)
        doubts.append(f"probe source {result.source_address or 'unknown'} is in the host's trusted networks; "
                      "relay results from here prove nothing (probe from outside them)")
    if served:  # a relay "accepted" to a domain the host is meant to take mail for proves nothing
        domain, listed_in = served
        doubts += evidence.pop(OPEN_RELAY, []) + [
            f"probe domain {domain} is in the host's {listed_in}, so relay tests to it prove nothing; set "
            "probe_domain to a domain this host does not serve"]


def judge(result: ProbeResult, *, deferral: str | None = None, orchestrator_trusted: bool = False,
          expect_local: str = "accept", served: tuple[str, str] | None = None, source: str = "probe") -> Verdict:
    """Vulnerable if any security finding; else inconclusive if anything could not be proven (or the service
    is broken); else secure, health findings (inbound refused) included.

    Drops, timeouts, 4xx (except a 4.7.1 deferral when `deferral` names the setting, which the driver
    passes when the host is configured to defer unauthorised relay), a missing banner and any recorded error are never
    secure. `orchestrator_trusted` (the probe came from a network the host is meant to trust) and
    `served` (the probe's "foreign" domain and the name of the host's list that covers it) make relay
    results prove nothing. Findings are labelled `source`. Raises ValueError for an unknown
    `expect_local`.
    """
    if expect_local not in ("accept", "refuse"):
        raise ValueError(f"expect_local must be 'accept' or 'refuse', not {expect_local!r}")
    evidence: dict[str, list[str]] = {}  # finding code -> why
    doubts: list[str] = []  # what keeps it from being secure
    facts: list[str] = []  # what was proven
    _judge_service(result, evidence, doubts)
    doubts += [f"probe error: {error}" for error in result.errors]

    _judge_anonymous(result, evidence, facts)

    attempts = result.relay_attempts
    accepted = [a for a in attempts if a.accepted]
    if accepted:
        listed = _forms([a.form for a in accepted])
        evidence.setdefault(OPEN_RELAY, []).append(
            f"relay accepted for {len(accepted)} of {len(attempts)} tests ({listed}), "
            f"e.g. {accepted[0]} ({accepted[0].rcpt_reply})")
    if result.anonymous_relay is not None and result.anonymous_relay.accepted:
        evidence.setdefault(OPEN_RELAY, []).append(f"relay accepted after AUTH ANONYMOUS: {result.anonymous_relay}")
    groups: dict[tuple[bool, str, int, str | None], tuple[list[int], Reply | None]] = {}
    for attempt in attempts:  # grouped by outcome and reply code, one example reply each
        if not attempt.accepted:
            refused, why, decisive = _classify(attempt, deferral)
            key = (refused, why, decisive.code if decisive else 0, decisive.enhanced if decisive else None)
            groups.setdefault(key, ([], decisive))[0].append(attempt.form)
    for (refused, why, *_), (numbers, example) in groups.items():
        example_text = f" ({example})" if example else ""
        (facts if refused else doubts).append(f"{_forms(numbers)}: {why}{example_text}")
    if not attempts:
        doubts.append("no relay test was run")
    elif all(a.mail_reply and a.mail_reply.klass == 5 and a.mail_reply.code != 530 for a in attempts):
        doubts.append("every MAIL FROM was refused, so no recipient was ever tested")
    _discount_relay(result, evidence, doubts, orchestrator_trusted, served)

    local_ok = _judge_local(result, expect_local, evidence, facts, doubts)

    status = (Status.VULNERABLE if SECURITY & evidence.keys() else
              Status.INCONCLUSIVE if doubts or SERVICE_BROKEN in evidence else Status.SECURE)
    findings = tuple(Finding(code, "; ".join(why), source) for code, why in evidence.items())
    found = [why for whys in evidence.values() for why in whys]
    return Verdict(status, findings, tuple(found + doubts + facts), local_ok)


_SEVERITY = {Status.SECURE: 0, Status.INCONCLUSIVE: 1, Status.VULNERABLE: 2}


def merged(verdict: Verdict, label: str, other: Verdict, *, submission: bool, source: str = "probe") -> Verdict:
    """`verdict` (the probe port's) with `other` (another SMTP service's, called `label`) folded in: its
    findings and reasons prefixed with `label`, the worse status. On a `submission` port (RFC 6409) mail
    for the host's own domain refused to an unauthenticated client is right, and accepted is the health
    finding `submission_without_auth`."""
    dropped = {INBOUND_REFUSED, INBOUND_TEMPFAIL} if submission else set()
    kept = [f for f in other.findings if f.code not in dropped]
    if submission and other.local_ok:
        kept.append(Finding(SUBMISSION_WITHOUT_AUTH, "takes mail from unauthenticated clients: a submission port "
                            "should require AUTH (RFC 6409 4.3)", source))
    gone = {f.detail for f in other.findings if f.code in dropped}
    reasons = [f"{label}: {r}" for r in other.reasons if r not in gone]
    status = max(verdict.status, other.status, key=_SEVERITY.__getitem__)
    return Verdict(status, verdict.findings + tuple(replace(f, detail=f"{label}: {f.detail}") for f in kept),
                   verdict.reasons + tuple(reasons), verdict.local_ok)


def describe(result: ProbeResult, verdict: Verdict) -> str:
    """One short paragraph: what a simulated (or real) session saw and concluded."""
    refused = [a for a in result.relay_attempts if not a.accepted]
    parts = [f"verdict {verdict.status}"]
    if result.relay_attempts:
        parts.append(f"foreign RCPT refused {len(refused)}/{len(result.relay_attempts)}"
                     + (f" ({refused[0].rcpt_reply})" if refused and refused[0].rcpt_reply else ""))
    if result.local_attempt is not None:
        parts.append(f"local RCPT {result.local_attempt.rcpt_reply}")
    auth = sorted(set(result.ehlo_auth) | set(result.tls_auth or ()))
    parts.append("AUTH " + (" ".join(auth) if auth else "not offered"))
    if verdict.status != Status.SECURE:
        parts += list(verdict.reasons)
    return "; ".join(parts)
