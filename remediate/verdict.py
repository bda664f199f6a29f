"""The verdict on what a probe saw: secure, vulnerable or inconclusive, with the reasons.

`judge(result)` turns a `ProbeResult` (from `remediate.probe`) into a `Verdict`, decided from reply
*classes* and enhanced status codes, never reply strings. Pure: no I/O, no logging. Findings are
`open_relay` and `anonymous_auth`; anything that could not be proven keeps a host from being secure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from remediate.smtp import Reply

if TYPE_CHECKING:  # types only: remediate.probe imports this module to re-export it; no runtime cycle
    from remediate.probe import ProbeResult, RelayAttempt

OPEN_RELAY = "open_relay"
ANONYMOUS_AUTH = "anonymous_auth"


class Status(StrEnum):
    SECURE = "secure"
    VULNERABLE = "vulnerable"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    findings: tuple[str, ...]
    reasons: tuple[str, ...]
    local_ok: bool | None


def _classify(attempt: RelayAttempt, defer_configured: bool) -> tuple[bool, str, Reply | None]:
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
    if rcpt.klass == 4 and defer_configured and (rcpt.enhanced == "4.7.1"
                                                  or (rcpt.code == 454 and rcpt.enhanced is None)):
        return True, "RCPT deferred, counted as refused because the host uses defer_unauth_destination", rcpt
    return False, "RCPT got a reply that proves nothing", rcpt


def _forms(numbers: list[int]) -> str:
    """`[1, 2, 3, 6]` -> "forms 1-3, 6"."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs)
    return ("form " if len(numbers) == 1 else "forms ") + text


def judge(result: ProbeResult, *, defer_configured: bool = False, orchestrator_trusted: bool = False,
          expect_local: str = "accept") -> Verdict:
    """Vulnerable if any finding; else inconclusive if anything could not be proven; else secure.

    Drops, timeouts, 4xx (except a 4.7.1 deferral when `defer_configured`), a missing banner and any
    recorded error are never secure. Raises ValueError for an unknown `expect_local`.
    """
    if expect_local not in ("accept", "refuse"):
        raise ValueError(f"expect_local must be 'accept' or 'refuse', not {expect_local!r}")
    findings: list[str] = []
    found: list[str] = []  # why each finding
    doubts: list[str] = []  # what keeps it from being secure
    facts: list[str] = []  # what was proven
    if result.banner is None:
        doubts.append(f"no SMTP banner from {result.address}:{result.port}")
    doubts += [f"probe error: {error}" for error in result.errors]

    where = [w for w, mechs in (("in plaintext", result.ehlo_auth), ("after STARTTLS", result.tls_auth or ()))
             if "ANONYMOUS" in mechs]
    if where:
        findings.append(ANONYMOUS_AUTH)
        tried = result.anonymous_attempt
        outcome = ("the attempt did not complete" if tried is None else
                   f"AUTH ANONYMOUS was {'accepted' if tried.code == 235 else 'refused'} ({tried})")
        found.append(f"ANONYMOUS is advertised {' and '.join(where)} (what Nessus 54581 flags); {outcome}")
    elif result.ehlo is not None:
        checked = "in plaintext" + (" or after STARTTLS" if result.tls_auth is not None else "")
        skipped = result.tls_offered and result.tls_auth is None
        unchecked = "; after STARTTLS was not checked" if skipped else ""
        facts.append(f"ANONYMOUS is not advertised {checked}{unchecked}")

    attempts = result.relay_attempts
    accepted = [a for a in attempts if a.accepted]
    if accepted:
        findings.append(OPEN_RELAY)
        listed = _forms([a.form for a in accepted])
        found.append(f"relay accepted for {len(accepted)} of {len(attempts)} tests ({listed}), "
                     f"e.g. {accepted[0]} ({accepted[0].rcpt_reply})")
    if result.anonymous_relay is not None and result.anonymous_relay.accepted:
        findings += [] if OPEN_RELAY in findings else [OPEN_RELAY]
        found.append(f"relay accepted after AUTH ANONYMOUS: {result.anonymous_relay}")
    groups: dict[tuple[bool, str, int, str | None], tuple[list[int], Reply | None]] = {}
    for attempt in attempts:  # grouped by outcome and reply code, one example reply each
        if not attempt.accepted:
            refused, why, decisive = _classify(attempt, defer_configured)
            key = (refused, why, decisive.code if decisive else 0, decisive.enhanced if decisive else None)
            groups.setdefault(key, ([], decisive))[0].append(attempt.form)
    for (refused, why, *_), (numbers, example) in groups.items():
        example_text = f" ({example})" if example else ""
        (facts if refused else doubts).append(f"{_forms(numbers)}: {why}{example_text}")
    if not attempts:
        doubts.append("no relay test was run")
    elif all(a.mail_reply and a.mail_reply.klass == 5 and a.mail_reply.code != 530 for a in attempts):
        doubts.append("every MAIL FROM was refused, so no recipient was ever tested")
    if orchestrator_trusted:  # the host relays for us by design: an accepted relay proves nothing either
        if OPEN_RELAY in findings:
            findings.remove(OPEN_RELAY)
            found = [f for f in found if not f.startswith("relay accepted")]
        doubts.append(f"probe source {result.source_address or 'unknown'} is in the host's trusted networks; "
                      "relay results from here prove nothing (probe from outside them)")

    local_ok, local = None, result.local_attempt
    if local is not None:
        domain = local.rcpt_to.rpartition("@")[2]
        refused = _classify(local, False)[0] if not local.accepted else False
        local_ok = local.accepted if expect_local == "accept" else refused
        reply = local.rcpt_reply or local.mail_reply or "connection dropped"
        if expect_local == "accept":
            (facts if local_ok else doubts).append(
                f"inbound mail for {domain} is {'accepted' if local_ok else 'refused'} ({reply})")
        elif local_ok:
            facts.append(f"unauthenticated mail for {domain} is refused, as the policy requires ({reply})")
        else:
            doubts.append(f"unauthenticated mail for {domain} was not refused as policy requires ({reply})")

    status = Status.VULNERABLE if findings else Status.INCONCLUSIVE if doubts else Status.SECURE
    return Verdict(status, tuple(findings), tuple(found + doubts + facts), local_ok)
