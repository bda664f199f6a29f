"""Garbled Exim and Sendmail configurations through each driver's transform pipeline (issue #11): the lab's
scenario files with comment lines of random bytes (not UTF-8, tabs, up to 16 KiB) slipped in between their
lines, CRLF endings, no final newline; and files of random bytes. The policy either gives what it gives on the
clean file, with every inserted comment line byte-identical and in place, CRLF kept and the final-newline state
kept, or it refuses with a RemediateError; it never corrupts a file and never raises anything else."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediate.errors import RemediateError
from remediate.model import Host
from remediate.mta.base import Candidate, Facts, PlaybookDriver
from remediate.mta.exim.driver import EximDriver
from remediate.mta.sendmail.driver import SendmailDriver
from tests.garbled import all_crlf, escaped, physical

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
HOST = Host("mx1", "192.0.2.25")
EXIM, SENDMAIL = EximDriver(), SendmailDriver()
GARBLED = settings(max_examples=60, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _exim(**files: str) -> dict[str, bytes]:
    debian = {"update_conf": "debian12-update-exim4.conf.conf", "template": "debian12-exim4.conf.template",
              "listmacros": "debian12-01_exim4-config_listmacrosdefs",
              "rcpt_acl": "debian12-30_exim4-config_check_rcpt", "authenticators": "debian12-30_exim4-config_examples"}
    out = {name: (GOLDEN / "exim" / path).read_bytes() for name, path in {**debian, **files}.items() if path}
    return {"exim4_conf": b"", **out}


def _split(rcpt_acl: str) -> dict[str, bytes]:
    files = _exim(rcpt_acl=rcpt_acl)
    files["update_conf"] = files["update_conf"].replace(b"dc_use_split_config='false'", b"dc_use_split_config='true'")
    return files


def _sendmail(mc: str, access: str) -> dict[str, bytes]:
    return {"mc": (GOLDEN / "sendmail" / mc).read_bytes(), "access": (GOLDEN / "sendmail" / access).read_bytes(),
            "local_host_names": b"mx.example.org\n"}


#: (driver, policies, files): every Exim and Sendmail scenario of the golden files
CASES: dict[str, tuple[PlaybookDriver, tuple[str, ...], Callable[[], dict[str, bytes]]]] = {
    "exim template, anonymous authenticator": (EXIM, ("relay-auth", "auth-all"),
                                               lambda: _exim(template="anonymous-auth.exim4.conf.template")),
    "exim update-exim4.conf.conf, open relay_nets": (
        EXIM, ("relay-auth",), lambda: _exim(update_conf="open-relay-nets.update-exim4.conf.conf")),
    "exim split config, no relay gate": (EXIM, ("relay-auth", "auth-all"),
                                         lambda: _split("no-relay-gate.30_exim4-config_check_rcpt")),
    "exim4.conf, accept any host": (EXIM, ("relay-auth", "auth-all"),
                                    lambda: _exim(exim4_conf="any-host-accept.exim4.conf")),
    "exim4.conf, open relay hosts": (EXIM, ("relay-auth",), lambda: _exim(exim4_conf="open-relay-hosts.exim4.conf")),
    "exim messy (CRLF inside)": (EXIM, ("relay-auth", "auth-all"), lambda: _exim(
        exim4_conf="messy.exim4.conf", update_conf="messy.update-exim4.conf.conf")),
    "sendmail promiscuous relay": (SENDMAIL, ("relay-auth",),
                                   lambda: _sendmail("promiscuous-relay-sendmail.mc", "open-connect-access")),
    "sendmail anonymous auth": (SENDMAIL, ("relay-auth",), lambda: _sendmail("anonymous-auth-sendmail.mc",
                                                                            "debian12-access")),
    "sendmail messy (CRLF inside)": (SENDMAIL, ("relay-auth",), lambda: _sendmail("messy-sendmail.mc",
                                                                                 "messy-access")),
}
MARK = b"~junk~"


def candidate(driver: PlaybookDriver, files: Mapping[str, bytes], policy: str) -> Candidate:
    return driver.candidate(Facts(dict(files), {}, {}), HOST, driver.playbook.policies[policy])


def comment(name: str) -> bytes:
    """How a comment line starts in file `name` (m4's `dnl` in sendmail.mc, `#` elsewhere)."""
    return b"dnl " if name == "mc" else b"# "


def safe_after(name: str, line: bytes) -> bool:
    """A comment line may follow `line` without changing what the file means: not inside an Exim line
    continued with a backslash, and in sendmail.mc only after a line m4 has finished with (dnl, blank)."""
    body = line.rstrip(b"\r\n")
    if name == "mc":
        return body.endswith(b"dnl") or not body.strip() or body.lstrip().startswith(b"dnl")
    return not body.endswith(b"\\")


@st.composite
def garbled(draw: Callable[..., Any], files: dict[str, bytes]) -> tuple[dict[str, bytes], bool, bool]:
    """(the files with junk comment lines inserted, CRLF everywhere?, final newline dropped?)."""
    crlf, unterminated = draw(st.booleans()), draw(st.booleans())
    out = {}
    for name, data in files.items():
        lines = physical(data)
        if crlf:
            lines = [line[:-1] + b"\r\n" if line.endswith(b"\n") and not line.endswith(b"\r\n") else line
                     for line in lines]
        spots = [i + 1 for i, line in enumerate(lines[:-1]) if line.endswith(b"\n") and safe_after(name, line)]
        for spot in sorted(draw(st.lists(st.sampled_from(spots), max_size=4)) if spots else [], reverse=True):
            junk = draw(st.binary(max_size=40)) + (b"\xff" * draw(st.sampled_from([0, 0, 16384])))
            junk = junk.replace(b"\n", b" ").replace(b"\r", b" ").replace(b"\0", b" ")
            lines.insert(spot, comment(name) + MARK + junk + (b"\r\n" if crlf else b"\n"))
        joined = b"".join(lines)
        out[name] = joined.removesuffix(b"\n").removesuffix(b"\r") if unterminated and data else joined
    return out, crlf, unterminated


def without_junk(data: bytes) -> bytes:
    return b"".join(line for line in physical(data) if MARK not in line).replace(b"\r\n", b"\n")


@pytest.mark.parametrize("case", list(CASES))
def test_garbled_configs_give_the_clean_result_with_every_inserted_byte_kept(case: str, reliability) -> None:
    driver, policies, make = CASES[case]
    clean = make()

    @GARBLED
    @given(data=st.data(), policy=st.sampled_from(policies))
    def check(data: st.DataObject, policy: str) -> None:
        files, crlf, unterminated = data.draw(garbled(clean))
        expected = candidate(driver, clean, policy)
        try:
            cand = candidate(driver, files, policy)
        except RemediateError:
            pytest.fail("a clean file's garbled twin was refused")
        assert set(cand.changed) == set(expected.changed)
        for name, before in files.items():
            after = cand.data(name)
            junk = [line for line in physical(before) if MARK in line]
            assert [line for line in physical(after) if MARK in line] == junk, f"{name}: inserted lines changed"
            want = without_junk(expected.data(name))
            got = without_junk(after)
            if unterminated and clean[name]:
                want = want.removesuffix(b"\n")
            assert got == want, f"{name}:\n{escaped(after)}\n--- expected (normalised) ---\n{escaped(want)}"
            if before:
                assert after.endswith(b"\n") == before.endswith(b"\n"), name
            if crlf and all_crlf(before):
                assert all_crlf(after), f"{name}: a line lost its CRLF:\n{escaped(after)}"
        again = candidate(driver, {name: cand.data(name) for name in files}, policy)
        assert again.changed == ()

    check()
    reliability("hostile input", f"{case}: garbled (hypothesis, 60 examples): comment lines of bytes not UTF-8 "
                "(up to 16 KiB) slipped in, CRLF, no final newline",
                "the clean file's result, every inserted byte kept in place, CRLF and final-newline state kept; "
                "idempotent", "no corrupted file (checked byte for byte)", None, 0)


@pytest.mark.parametrize("case", ["exim template, anonymous authenticator", "exim4.conf, accept any host",
                                  "exim split config, no relay gate", "sendmail messy (CRLF inside)"])
def test_random_bytes_in_any_file_give_a_result_or_a_clear_refusal_never_a_crash(case: str) -> None:
    driver, policies, make = CASES[case]
    clean = make()

    @settings(max_examples=80, deadline=None)
    @given(name=st.sampled_from(sorted(clean)), data=st.binary(max_size=400) | st.builds(
        lambda head, tail: head + tail, st.sampled_from([b"", b"relay_nets = ", b"accept hosts = ", b"FEATURE(`"]),
        st.binary(max_size=200)), policy=st.sampled_from(policies))
    def check(name: str, data: bytes, policy: str) -> None:
        files = {**clean, name: data}
        try:
            cand = candidate(driver, files, policy)
        except RemediateError as exc:
            assert re.search(r"\w", str(exc)), exc
            return
        for other, before in files.items():
            after = cand.data(other)
            assert (other in cand.changed) == (after != before)
            if before and after:
                assert after.endswith(b"\n") == before.endswith(b"\n"), other
        assert candidate(driver, {n: cand.data(n) for n in files}, policy).changed == ()

    check()
