"""Sendmail transforms and audit: the three laws, the scenarios, and audit/transform agreement.

Golden inputs (tests/golden/sendmail/) come from Debian 12's packages, sendmail-base and sendmail-cf
8.17.1.9-2+deb12u2, used as shipped:

- ``debian12-sendmail.mc`` is ``/usr/share/sendmail/cf/debian/sendmail.mc``, which ``update_mc`` copies to
  ``/etc/mail/sendmail.mc`` on first install (when ``/etc/mailname`` exists it also inserts four
  masquerading lines before ``dnl # Default Mailer setup``; they touch neither relay nor AUTH);
- ``debian12-access`` is ``/usr/share/sendmail/examples/db/access``, which ``update_db`` copies to
  ``/etc/mail/access`` (``Connect:127 RELAY`` and ``Connect:IPv6:::1 RELAY`` are its only live RELAY lines).

The scenario files are those two with one edit each (the tests name it); ``messy-*`` are hand-written, with
CRLF endings and no final newline. The expected outputs (``*.expected``) were checked by running GNU m4
1.4.19 over Debian's cf tree before and after: the open-relay warnings go, ``C{TrustAuthMech}`` and
``O AuthMechanisms`` lose ANONYMOUS, ``O AuthOptions`` gains ``y``, and nothing else in the .cf changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediate.errors import ConfigError
from remediate.model import Finding
from remediate.mta.sendmail.rules import (
    NEW_AUTH_OPTIONS,
    OPEN_RELAY_FEATURES,
    audit,
    ensure_auth_options,
    remove_anonymous_auth,
    remove_promiscuous_relay,
    restrict_connect_relay,
    served_domains,
)
from remediate.mta.sendmail.syntax import COMMENTED, DISABLED, key_network, parse_access, parse_mc
from tests.textdiff import diff, lines

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "sendmail"
TRUSTED = ["127.0.0.0/8", "::1/128"]
PATHS = {"mc": "/etc/mail/sendmail.mc", "access": "/etc/mail/access"}
MC_TRANSFORMS: list[Callable[[str], str]] = [remove_promiscuous_relay, remove_anonymous_auth, ensure_auth_options]
EXPOSURE = {"open_relay", "anonymous_auth"}


def golden(name: str) -> str:
    """A golden file exactly as stored (CRLF and a missing final newline survive)."""
    return (GOLDEN / name).read_bytes().decode("utf-8")


def mc_policy(text: str) -> str:
    for transform in MC_TRANSFORMS:
        text = transform(text)
    return text


def access_policy(text: str, trusted: list[str] = TRUSTED) -> str:
    return restrict_connect_relay(text, trusted_networks=trusted)


def found(texts: dict[str, str], trusted: list[str] = TRUSTED) -> list[tuple[str, int | None, str | None]]:
    return [(f.code, f.line, f.parameter) for f in audit(texts, PATHS, trusted_networks=trusted)]


# ---------------------------------------------------------------------------------------------------------
# Debian's stock files are already safe: nothing changes, nothing is reported.

@pytest.mark.parametrize("transform", MC_TRANSFORMS)
def test_debian_stock_mc_is_left_as_the_same_object(transform: Callable[[str], str]) -> None:
    text = golden("debian12-sendmail.mc")
    assert transform(text) is text


def test_debian_stock_access_is_left_as_the_same_object() -> None:
    text = golden("debian12-access")
    assert access_policy(text) is text
    assert served_domains(text) == ()


def test_debian_stock_has_no_findings() -> None:
    assert found({"mc": golden("debian12-sendmail.mc"), "access": golden("debian12-access")}) == []


def test_debian_stock_reads_like_m4_and_makemap() -> None:
    macros = parse_mc(golden("debian12-sendmail.mc"))
    daemons = [(m.line, m.literal(0)) for m in macros if m.name == "DAEMON_OPTIONS"]
    assert daemons == [(57, "Family=inet,  Name=MTA-v4, Port=smtp, Addr=127.0.0.1"),
                       (59, "Family=inet,  Name=MSP-v4, Port=submission, M=Ea, Addr=127.0.0.1")]
    privacy = next(m for m in macros if m.literal(0) == "confPRIVACY_FLAGS")  # two lines, joined by dnl
    assert (privacy.line, privacy.last_line + 1) == (62, 63)
    assert privacy.literal(1) == ("needmailhelo,needexpnhelo,needvrfyhelo,restrictqrun,restrictexpand,"
                                  "nobodyreturn,authwarnings")
    assert [m.literal(0) for m in macros if m.name == "FEATURE"][:3] == ["no_default_msa", "use_cw_file", "access_db"]
    relay = [(e.key, key_network(e.name)[1]) for e in parse_access(golden("debian12-access")) if e.value == "RELAY"]
    assert [(key, str(network)) for key, network in relay] == [("Connect:127", "127.0.0.0/8"),
                                                               ("Connect:IPv6:::1", "::1/128")]


# ---------------------------------------------------------------------------------------------------------
# The scenarios.

def test_promiscuous_relay_is_disabled_and_nothing_else_changes() -> None:
    before = golden("promiscuous-relay-sendmail.mc")  # Debian's mc + FEATURE(`promiscuous_relay')dnl
    assert found({"mc": before}) == [("open_relay", 75, "FEATURE(`promiscuous_relay')")]
    after = mc_policy(before)
    assert after == golden("promiscuous-relay-sendmail.mc.expected")
    assert diff(before, after) == (["FEATURE(`promiscuous_relay')dnl\n"],
                                   ["dnl # remediate: FEATURE(`promiscuous_relay')dnl\n"])
    assert found({"mc": after}) == []


def test_connect_relay_outside_trusted_networks_is_commented_out() -> None:
    before = golden("open-connect-access")  # Debian's access + Connect:10 RELAY and Connect:172 RELAY
    findings = audit({"access": before}, PATHS, trusted_networks=TRUSTED)
    assert [(f.code, f.file, f.line, f.parameter) for f in findings] == [
        ("open_relay", "/etc/mail/access", 72, "Connect:10"), ("open_relay", "/etc/mail/access", 84, "Connect:172")]
    assert "10.0.0.0/8" in findings[0].detail and "172.0.0.0/8" in findings[1].detail
    after = access_policy(before)
    assert after == golden("open-connect-access.expected")
    removed = ["Connect:10\t\t\t\tRELAY\n", "Connect:172\t\t\t\tRELAY\n"]
    assert diff(before, after) == (removed, [COMMENTED + line for line in removed])
    assert found({"access": after}) == []
    # a wider trust keeps the LAN's entry
    assert found({"access": before}, TRUSTED + ["10.0.0.0/8"]) == [("open_relay", 84, "Connect:172")]


def test_backup_mx_domain_is_explained_not_changed() -> None:
    text = golden("backup-mx-access")  # Debian's access + To:example.net RELAY
    assert found({"access": text}) == [("relay_domains", 114, "To:example.net")]
    assert access_policy(text) is text
    assert served_domains(text) == ("example.net",)


def test_anonymous_auth_is_removed_and_y_ensured() -> None:
    before = golden("anonymous-auth-sendmail.mc")  # Debian's mc + AUTH with ANONYMOUS, sasl.m4 style
    assert found({"mc": before}) == [("open_relay", 103, "TRUST_AUTH_MECH"),
                                     ("anonymous_auth", 101, "confAUTH_MECHANISMS"),
                                     ("noanonymous_missing", 101, "confAUTH_OPTIONS")]
    after = mc_policy(before)
    assert after == golden("anonymous-auth-sendmail.mc.expected")
    assert diff(before, after) == (
        ["`ANONYMOUS DIGEST-MD5 CRAM-MD5 PLAIN LOGIN')dnl\n",
         "TRUST_AUTH_MECH(`ANONYMOUS DIGEST-MD5 CRAM-MD5 PLAIN LOGIN')dnl\n"],
        ["`DIGEST-MD5 CRAM-MD5 PLAIN LOGIN')dnl\n", "TRUST_AUTH_MECH(`DIGEST-MD5 CRAM-MD5 PLAIN LOGIN')dnl\n",
         "define(`confAUTH_OPTIONS', `y')dnl\n"])
    assert found({"mc": after}) == []


def test_mta_listening_on_every_address_is_reported_only() -> None:
    text = golden("daemon-all-addresses-sendmail.mc")  # Debian's mc, `, Addr=127.0.0.1' gone from MTA-v4
    findings = audit({"mc": text}, PATHS, trusted_networks=TRUSTED)
    assert [(f.code, f.line, f.parameter) for f in findings] == [("daemon_all_addresses", 57, "DAEMON_OPTIONS")]
    assert "every IPv4 address" in findings[0].detail
    assert mc_policy(text) is text
    stock = golden("debian12-sendmail.mc")
    no_daemon = "".join(line for line in lines(stock) if not line.startswith("DAEMON_OPTIONS"))
    assert found({"mc": no_daemon}) == [("daemon_all_addresses", None, "DAEMON_OPTIONS")]


@pytest.mark.parametrize(("options", "reported"), [
    ("Port=smtp, Addr=0.0.0.0", True), ("Family=inet6, Port=25", True), ("Name=MTA", True),
    ("Port=smtp, Addr=192.0.2.25", False), ("Port=submission, M=Ea", False), ("Port=587, Addr=::", False)])
def test_daemon_options_judged_by_port_and_address(options: str, reported: bool) -> None:
    text = f"DAEMON_OPTIONS(`{options}')dnl\n"
    assert (found({"mc": text}) == [("daemon_all_addresses", 1, "DAEMON_OPTIONS")]) == reported


def test_messy_mc_matches_its_golden_result_and_explains_every_line() -> None:
    before = golden("messy-sendmail.mc")
    assert set(found({"mc": before})) == {
        ("open_relay", 11, "FEATURE(`relay_local_from')"),  # a `#' line after cf.m4 is live m4
        ("open_relay", 17, "FEATURE(`promiscuous_relay')"),  # shares its line with FEATURE(`use_cw_file')
        ("open_relay", 19, "FEATURE(`loose_relay_check')"),  # two lines
        ("open_relay", 22, "FEATURE(`relay_mail_from')"),
        ("open_relay", 26, "TRUST_AUTH_MECH"),
        ("anonymous_auth", 25, "confAUTH_MECHANISMS"),
        ("noanonymous_missing", 28, "confAUTH_OPTIONS"),
        ("relay_domains", 21, "FEATURE(`relay_based_on_MX')"),
        ("daemon_all_addresses", 13, "DAEMON_OPTIONS")}
    after = mc_policy(before)
    assert after == golden("messy-sendmail.mc.expected")
    assert "\n" not in after.replace("\r\n", "") and not after.endswith("\n")
    assert "# dnl\r\ndnl # remediate: FEATURE(`relay_local_from')" in after  # m4's output keeps its `# '
    assert "FEATURE(`use_cw_file')dnl\r\ndnl # remediate: FEATURE(`promiscuous_relay')dnl two" in after
    assert "dnl # remediate: FEATURE(`relay_mail_from', `domain')dnl\r\nFEATURE(`delay_checks'" in after
    assert "define(`confAUTH_OPTIONS', `A,p,y')dnl\r\n" in after
    assert {code for code, _, _ in found({"mc": after})} == {"relay_domains", "daemon_all_addresses"}
    assert mc_policy(after) is after


def test_messy_access_matches_its_golden_result() -> None:
    before = golden("messy-access")
    assert set(found({"access": before})) == {
        ("open_relay", 5, "connect:172.16"), ("open_relay", 6, "192.168.1"),
        ("open_relay", 9, "Connect:IPv6:2001:db8"), ("open_relay", 10, "Connect:[203.0.113.5]"),
        ("open_relay", 17, "Connect:0"), ("relay_domains", 13, "To:backup.example.org"),
        ("relay_domains", 14, "example.com")}
    after = access_policy(before)
    assert after == golden("messy-access.expected")
    assert after.endswith("\r\n# remediate: Connect:0 RELAY")
    assert "\r\n  Connect:10 RELAY\r\n" in after  # makemap refuses a line with leading space: not an entry
    assert served_domains(before) == ("backup.example.org", "example.com")
    assert access_policy(after) is after


# ---------------------------------------------------------------------------------------------------------
# sendmail.mc: reading m4.

@pytest.mark.parametrize(("text", "live"), [
    ("FEATURE(`promiscuous_relay')dnl\n", True),
    ("FEATURE(promiscuous_relay)\n", True),
    ("  FEATURE( `promiscuous_relay' )dnl\n", True),
    ("FEATURE(`relay_local_from')dnl\n", True),
    ("FEATURE(`relay_mail_from', `domain')dnl\n", True),
    ("FEATURE(`loose_relay_check')dnl\n", True),
    ("dnl FEATURE(`promiscuous_relay')dnl\n", False),
    ("dnl # remediate: FEATURE(`promiscuous_relay')dnl\n", False),
    ("`FEATURE(`promiscuous_relay')'\n", False),  # quoted: text to m4
    ("ifdef(`NEVER', `FEATURE(`promiscuous_relay')')dnl\n", False),  # inside an argument: not top level
    ("FEATURE(`relay_based_on_MX')dnl\n", False),
    ("FEATURE(`relay_entire_domain')dnl\n", False),
    ("FEATURE(`promiscuous_relay_x')dnl\n", False),
    ("include(`cf.m4')dnl\n# FEATURE(`promiscuous_relay')dnl\n", True),  # cf.m4 calls changecom()
    ("# FEATURE(`promiscuous_relay')dnl\ninclude(`/usr/share/sendmail/cf/m4/cf.m4')dnl\n", False),
    ("# FEATURE(`promiscuous_relay')dnl\n", True),  # no include: read as `m4 cf.m4 this.mc` reads it
])
def test_relay_features_are_found_where_m4_expands_them(text: str, live: bool) -> None:
    after = remove_promiscuous_relay(text)
    assert (after is not text) == live
    assert any(code == "open_relay" for code, _, _ in found({"mc": text})) == live


@pytest.mark.parametrize("name", sorted(OPEN_RELAY_FEATURES))
def test_every_relay_opening_feature_is_disabled(name: str) -> None:
    assert remove_promiscuous_relay(f"FEATURE(`{name}')dnl\n") == f"{DISABLED}FEATURE(`{name}')dnl\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("FEATURE(\r\n  `promiscuous_relay')dnl\r\n",
     f"{DISABLED}FEATURE(\r\n{DISABLED}  `promiscuous_relay')dnl\r\n"),
    ("FEATURE(`a')FEATURE(`promiscuous_relay')FEATURE(`b')\n",
     f"FEATURE(`a')dnl\n{DISABLED}FEATURE(`promiscuous_relay')dnl\nFEATURE(`b')\n"),
    ("FEATURE(`promiscuous_relay')FEATURE(`relay_local_from')dnl\n",
     f"{DISABLED}FEATURE(`promiscuous_relay')dnl\n{DISABLED}FEATURE(`relay_local_from')dnl\n"),
    ("define(`x',\n`y')FEATURE(`promiscuous_relay')", f"define(`x',\n`y')dnl\n{DISABLED}FEATURE(`promiscuous_relay')"),
    ("FEATURE(`promiscuous_relay')", f"{DISABLED}FEATURE(`promiscuous_relay')"),
])
def test_disabling_keeps_other_statements_on_their_own_lines(text: str, expected: str) -> None:
    assert remove_promiscuous_relay(text) == expected
    assert remove_promiscuous_relay(expected) is expected


def test_arguments_follow_m4_quoting_dnl_and_nesting() -> None:
    text = "define(`confAUTH_MECHANISMS',dnl a comment\n  `EXTERNAL 'defn(`confAUTH_MECHANISMS'))dnl\n"
    (macro,) = parse_mc(text)
    value = macro.arg(1)
    assert value is not None and value.opaque and value.value == "EXTERNAL "
    (nested,) = parse_mc("define(`x', `a, (b)', c (d, e))\n")
    assert [arg.value for arg in nested.args or ()] == ["x", "a, (b)", "c (d, e)"]
    (unclosed,) = parse_mc("FEATURE(`promiscuous_relay'\n")
    assert not unclosed.closed and unclosed.literal(0) == "promiscuous_relay"


# ---------------------------------------------------------------------------------------------------------
# sendmail.mc: AUTH.

@pytest.mark.parametrize(("text", "expected"), [
    ("define(`confAUTH_MECHANISMS', `ANONYMOUS PLAIN')dnl\n", "define(`confAUTH_MECHANISMS', `PLAIN')dnl\n"),
    ("define(`confAUTH_MECHANISMS', `PLAIN ANONYMOUS LOGIN')dnl\n",
     "define(`confAUTH_MECHANISMS', `PLAIN LOGIN')dnl\n"),
    ("define(`confAUTH_MECHANISMS', `ANONYMOUS')dnl\n", "define(`confAUTH_MECHANISMS', `')dnl\n"),
    ("TRUST_AUTH_MECH(`anonymous, LOGIN')\r\n", "TRUST_AUTH_MECH(`LOGIN')\r\n"),
    ("TRUST_AUTH_MECH(`ANONYMOUS')dnl\n", f"{DISABLED}TRUST_AUTH_MECH(`ANONYMOUS')dnl\n"),
    ("TRUST_AUTH_MECH(`ANONYMOUS 'defn(`x'))\n", "TRUST_AUTH_MECH(`'defn(`x'))\n"),
    ("TRUST_AUTH_MECH(ANONYMOUS PLAIN)\n", "TRUST_AUTH_MECH(PLAIN)\n"),
    ("TRUST_AUTH_MECH(`PLAIN')dnl ANONYMOUS\n", None),
    ("dnl TRUST_AUTH_MECH(`ANONYMOUS')\n", None),
    ("define(`confAUTH_MECHANISMS', `ANONYMOUSX PLAIN')dnl\n", None),
])
def test_anonymous_is_cut_from_mechanism_lists(text: str, expected: str | None) -> None:
    after = remove_anonymous_auth(text)
    assert after == (expected or text)
    assert (after is text) == (expected is None)


AUTH = "TRUST_AUTH_MECH(`PLAIN')dnl\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("FEATURE(`access_db')dnl\nMAILER(`smtp')dnl\n", None),  # no AUTH: nothing to guard
    (f"{AUTH}define(`confAUTH_OPTIONS', `A p y')dnl\n", None),
    (f"{AUTH}define(`confAUTH_OPTIONS', `A p')dnl\n", f"{AUTH}define(`confAUTH_OPTIONS', `A p y')dnl\n"),
    (f"{AUTH}define(`confAUTH_OPTIONS', `A,p')dnl\n", f"{AUTH}define(`confAUTH_OPTIONS', `A,p,y')dnl\n"),
    (f"{AUTH}define(`confAUTH_OPTIONS', `')dnl\n", f"{AUTH}define(`confAUTH_OPTIONS', `y')dnl\n"),
    (f"{AUTH}define(`confAUTH_OPTIONS', `py')dnl\n", f"{AUTH}define(`confAUTH_OPTIONS', `py y')dnl\n"),
    (f"{AUTH}define(`confAUTH_OPTIONS', A p)dnl\n",  # unquoted `A' may be a macro: y goes in quotes of its own
     f"{AUTH}define(`confAUTH_OPTIONS', A p` y')dnl\n"),
    (f"{AUTH}define(`confAUTH_OPTIONS', defn(`o'))\n", f"{AUTH}define(`confAUTH_OPTIONS', defn(`o')` y')\n"),
    (f"{AUTH}define(`confAUTH_OPTIONS')\n", f"{AUTH}define(`confAUTH_OPTIONS', `y')\n"),
    (f"{AUTH}MAILER_DEFINITIONS\nMAILER(`smtp')\n", f"{AUTH}{NEW_AUTH_OPTIONS}\nMAILER_DEFINITIONS\nMAILER(`smtp')\n"),
    (f"MAILER(`local')\n{AUTH}", f"{NEW_AUTH_OPTIONS}\nMAILER(`local')\n{AUTH}"),  # AUTH after MAILER
    (f"{AUTH}define(`confAUTH_OPTIONS', `y')dnl\nundefine(`confAUTH_OPTIONS')dnl\nMAILER(`smtp')\n",
     f"{AUTH}define(`confAUTH_OPTIONS', `y')dnl\nundefine(`confAUTH_OPTIONS')dnl\n{NEW_AUTH_OPTIONS}\n"
     "MAILER(`smtp')\n"),
    ("TRUST_AUTH_MECH(`PLAIN')", f"TRUST_AUTH_MECH(`PLAIN')\n{NEW_AUTH_OPTIONS}"),  # no final newline kept
    ("TRUST_AUTH_MECH(`PLAIN')define(`a',\n`b')\r\nMAILER(`smtp')\r\n",
     f"TRUST_AUTH_MECH(`PLAIN')define(`a',\n`b')\r\n{NEW_AUTH_OPTIONS}\r\nMAILER(`smtp')\r\n"),
])
def test_y_is_ensured_where_auth_is_configured(text: str, expected: str | None) -> None:
    after = ensure_auth_options(text)
    assert after == (expected or text)
    assert (after is text) == (expected is None)
    assert ensure_auth_options(after) is after


def test_unreadable_mechanism_list_without_y_is_anonymous_auth() -> None:
    text = "define(`confAUTH_MECHANISMS', `EXTERNAL 'defn(`confAUTH_MECHANISMS'))dnl\nMAILER(`smtp')\n"
    assert found({"mc": text}) == [("anonymous_auth", 1, "confAUTH_OPTIONS"),
                                   ("daemon_all_addresses", None, "DAEMON_OPTIONS")]
    assert [code for code, _, _ in found({"mc": mc_policy(text)})] == ["daemon_all_addresses"]


# ---------------------------------------------------------------------------------------------------------
# The access map.

@pytest.mark.parametrize(("line", "opened"), [
    ("Connect:10 RELAY", True), ("Connect:172 RELAY", True), ("Connect:0 RELAY", True),
    ("Connect:203.0.113 RELAY", True), ("10.1.2 RELAY", True), ("CONNECT:192.168 relay", True),
    ("Connect:IPv6:2002:c0a8:02c7 RELAY", True), ("Connect:IPv6:::2 RELAY", True),
    ("Connect:[198.51.100.7] RELAY", True), ("Connect:IPv6:nonsense RELAY", True),
    ("Connect:127 RELAY", False), ("Connect:127.0.0.1 RELAY", False), ("Connect:IPv6:::1 RELAY", False),
    ("Connect:[127.0.0.1] RELAY", False), ("Connect:localhost RELAY", False), ("Connect:example.com RELAY", False),
    ("Connect:10 OK", False), ("Connect:10 RELAY # lan", False), ("Connect:256 RELAY", False),
    ("From:10 RELAY", False), ("To:10 RELAY", False), (" Connect:10 RELAY", False), ("#Connect:10 RELAY", False),
    ("Connect:10", False), ("GreetPause:10 RELAY", False),
])
def test_connect_relay_entries_are_judged_by_network(line: str, opened: bool) -> None:
    text = f"# head\n{line}\n"
    after = access_policy(text)
    assert after == (f"# head\n{COMMENTED}{line}\n" if opened else text)
    assert (after is text) == (not opened)
    relays = [finding for finding in found({"access": text}) if finding[0] == "open_relay"]
    assert relays == ([("open_relay", 2, line.split()[0])] if opened else [])


@pytest.mark.parametrize("bad", [["[::1]/128"], ["10.0.0.0/33"], ["mail.example.net"], "10.0.0.0/8", [10]])
def test_trusted_networks_must_be_cidr(bad: Any) -> None:
    with pytest.raises(ConfigError):
        restrict_connect_relay("", trusted_networks=bad)
    with pytest.raises(ConfigError):
        audit({}, {}, trusted_networks=bad)


def test_access_findings_note_a_map_that_is_not_read() -> None:
    access = "Connect:10 RELAY\nTo:example.net RELAY\n"
    findings = audit({"mc": "DAEMON_OPTIONS(`Addr=127.0.0.1')\n", "access": access}, PATHS, trusted_networks=TRUSTED)
    assert [f.code for f in findings] == ["open_relay", "relay_domains"]
    assert all("not read today" in f.detail for f in findings)
    assert all("not read" not in f.detail for f in audit({"access": access}, PATHS, trusted_networks=TRUSTED))


def test_served_domains_lists_to_and_untagged_name_relays() -> None:
    text = ("To:Example.NET RELAY\nTo:user@b.example RELAY\nc.example RELAY\n10 RELAY\nTo:d.example OK\n"
            "To:example.net RELAY\n")
    assert served_domains(text) == ("example.net", "b.example", "c.example")


def test_audit_refuses_unknown_policy_and_file_names() -> None:
    with pytest.raises(ConfigError):
        audit({}, {}, trusted_networks=TRUSTED, policy="open")
    with pytest.raises(ConfigError):
        audit({"main_cf": ""}, {}, trusted_networks=TRUSTED)
    assert audit({"mc": golden("debian12-sendmail.mc")}, {}, trusted_networks=TRUSTED, policy="auth-all") == []


def test_findings_name_file_line_and_parameter() -> None:
    (finding,) = audit({"mc": golden("promiscuous-relay-sendmail.mc")}, PATHS, trusted_networks=TRUSTED)
    assert finding == Finding("open_relay", finding.detail, "config", "/etc/mail/sendmail.mc", 75,
                              "FEATURE(`promiscuous_relay')")
    assert finding.text.startswith("sendmail.mc:75: FEATURE(`promiscuous_relay'): FEATURE")


# ---------------------------------------------------------------------------------------------------------
# Generated files: the three laws and agreement between transforms and audit.

STATEMENTS = [
    "FEATURE(`promiscuous_relay')dnl", "FEATURE(promiscuous_relay)", "  FEATURE(`relay_local_from')dnl # why",
    "FEATURE(\n\t`loose_relay_check')dnl", "FEATURE(`relay_mail_from', `domain')dnl", "FEATURE(`relay_based_on_MX')dnl",
    "FEATURE(`use_cw_file')dnl", "FEATURE(`access_db', , `skip')dnl",
    "define(`confAUTH_MECHANISMS', `ANONYMOUS PLAIN LOGIN')dnl",
    "define(`confAUTH_MECHANISMS',dnl\n`DIGEST-MD5 ANONYMOUS')dnl",
    "define(`confAUTH_MECHANISMS', `ANONYMOUS')dnl", "define(`confAUTH_MECHANISMS', `PLAIN LOGIN')dnl",
    "define(`confAUTH_MECHANISMS', `EXTERNAL 'defn(`confAUTH_MECHANISMS'))dnl",
    "TRUST_AUTH_MECH(`ANONYMOUS')dnl", "TRUST_AUTH_MECH(`PLAIN ANONYMOUS')", "TRUST_AUTH_MECH(`EXTERNAL')",
    "TRUST_AUTH_MECH(`anonymous, LOGIN')dnl",
    "define(`confAUTH_OPTIONS', `A p')dnl", "define(`confAUTH_OPTIONS', `A p y')dnl",
    "define(`confAUTH_OPTIONS', `')dnl",
    "define(`confAUTH_OPTIONS', `A,p')dnl", "undefine(`confAUTH_OPTIONS')dnl",
    "DAEMON_OPTIONS(`Port=smtp, Addr=127.0.0.1')dnl", "DAEMON_OPTIONS(`Port=smtp')dnl",
    "MAILER_DEFINITIONS", "MAILER(`local')dnl", "MAILER(`smtp')",
    "include(`/usr/share/sendmail/cf/m4/cf.m4')dnl", "divert(-1)dnl", "divert(0)dnl", "VERSIONID(`x')",
    "FEATURE(`use_cw_file')FEATURE(`promiscuous_relay')dnl", "TRUST_AUTH_MECH(`ANONYMOUS')FEATURE(`access_db')dnl",
    "MAILER(`local')TRUST_AUTH_MECH(`PLAIN')", "define(`x',\n`y')FEATURE(`relay_local_from') FEATURE(`nouucp')",
    "dnl # a comment", "dnl FEATURE(`promiscuous_relay')dnl", "# FEATURE(`promiscuous_relay')dnl", "# plain",
    "", "  ", "dnl",
]
ACCESS_LINES = [
    "Connect:10\tRELAY", "Connect:172 RELAY", "Connect:127\t\t\t\tRELAY", "Connect:IPv6:::1\tRELAY",
    "Connect:IPv6:2001:db8 RELAY", "Connect:[203.0.113.5] RELAY", "192.168 RELAY", "Connect:localhost RELAY",
    "connect:10.1.2.3 relay", "Connect:10 OK", "To:example.net RELAY", "example.org RELAY", "From:x.example RELAY",
    "GreetPause:127 0", "  Connect:10 RELAY", "# Connect:10 RELAY", "#", "", "Connect:IPv6:zz RELAY",
]
TRUSTS = [TRUSTED, [*TRUSTED, "10.0.0.0/8"], ["192.168.0.0/16", "2001:db8::/32"]]
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def texts(draw: Callable[..., Any], pool: list[str]) -> str:
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    body = [item.replace("\n", eol) for item in draw(st.lists(st.sampled_from(pool), max_size=14))]
    text = eol.join(body)
    return text + eol if body and draw(st.booleans()) else text


TOKEN = re.compile(r"[^\s,`'()]+")


def _explains(before: str, group: list[str]) -> bool:
    """True when `group` (output lines) is `before` (one input line) disabled, split at inserted `dnl`s,
    with ANONYMOUS words cut, or with `y` added; its line ending kept."""
    pieces = [line.rstrip("\r\n")[:-3] if i < len(group) - 1 else line for i, line in enumerate(group)]
    if any(not line.rstrip("\r\n").endswith("dnl") for line in group[:-1]):
        return False
    candidate = "".join(pieces).replace(DISABLED, "")
    if candidate == before:
        return True
    old, new = TOKEN.findall(before), TOKEN.findall(candidate)
    same_end = candidate[len(candidate.rstrip("\r\n")):] == before[len(before.rstrip("\r\n")):]
    anonymous = [t for t in old if t.upper() != "ANONYMOUS"] == new and old != new
    added_y = "y" in new and new[:new.index("y")] + new[new.index("y") + 1:] == old
    return same_end and len(group) == 1 and (anonymous or added_y)


def laws_hold(before: str, after: str) -> bool:
    """Every input line is kept or explained, in order; every other output line is the added define."""
    if before and not before.endswith("\n"):
        if after.endswith("\n" + NEW_AUTH_OPTIONS) and len(lines(after)) == len(lines(before)) + 1:
            # appended after a last line that had no ending
            after = after[: -len(NEW_AUTH_OPTIONS)].removesuffix("\n").removesuffix("\r")
        if after.endswith("\n"):
            return False
    return _matches(lines(before), lines(after))


def _matches(before: list[str], after: list[str]) -> bool:
    """Each `before` line is explained by the next one to three `after` lines; the added define fills gaps."""
    if not before:
        return all(line.rstrip("\r\n") == NEW_AUTH_OPTIONS for line in after)
    if after and after[0].rstrip("\r\n") == NEW_AUTH_OPTIONS and _matches(before, after[1:]):
        return True
    return any(width <= len(after) and _explains(before[0], after[:width]) and _matches(before[1:], after[width:])
               for width in (1, 2, 3))


FINDING_OF = {
    remove_promiscuous_relay: lambda f: f.code == "open_relay" and (f.parameter or "").startswith("FEATURE"),
    remove_anonymous_auth: lambda f: f.parameter in ("TRUST_AUTH_MECH", "confAUTH_MECHANISMS"),
    ensure_auth_options: lambda f: f.parameter == "confAUTH_OPTIONS",
}


@FAST
@given(texts(STATEMENTS), st.sampled_from(MC_TRANSFORMS))
def test_generated_mc_laws(text: str, transform: Callable[[str], str]) -> None:
    once = transform(text)
    assert transform(once) is once
    assert (once is text) == (once == text)
    assert laws_hold(text, once), (text, once)
    findings = audit({"mc": text}, PATHS, trusted_networks=TRUSTED)
    assert (once is not text) == any(FINDING_OF[transform](f) for f in findings)


@FAST
@given(texts(STATEMENTS))
def test_after_the_mc_transforms_no_exposure_remains(text: str) -> None:
    after = mc_policy(text)
    assert mc_policy(after) is after
    remaining = {f.code for f in audit({"mc": after}, PATHS, trusted_networks=TRUSTED)}
    assert not remaining & (EXPOSURE | {"noanonymous_missing"})
    for finding in audit({"mc": text}, PATHS, trusted_networks=TRUSTED):
        if finding.code in EXPOSURE:
            assert any(FINDING_OF[t](finding) for t in MC_TRANSFORMS), finding


@FAST
@given(texts(ACCESS_LINES), st.sampled_from(TRUSTS))
def test_generated_access_laws(text: str, trusted: list[str]) -> None:
    once = access_policy(text, trusted)
    assert access_policy(once, trusted) is once
    assert (once is text) == (once == text)
    opened = {f.line for f in audit({"access": text}, PATHS, trusted_networks=trusted) if f.code == "open_relay"}
    before, after = lines(text), lines(once)
    assert len(before) == len(after)
    changed = {number for number, (a, b) in enumerate(zip(before, after, strict=True), 1) if a != b}
    assert changed == opened
    assert all(after[n - 1] == COMMENTED + before[n - 1] for n in changed)
    assert not [f for f in audit({"access": once}, PATHS, trusted_networks=trusted) if f.code in EXPOSURE]
    relays = [f for f in audit({"access": text}, PATHS, trusted_networks=trusted) if f.code == "relay_domains"]
    assert bool(served_domains(text)) == bool(relays)
