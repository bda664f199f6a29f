"""Exim transforms and audit: Debian's stock files, the scenarios, the three laws, and audit/transform agreement."""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediate.errors import ConfigError
from remediate.mta.exim import rules
from remediate.mta.exim.syntax import debian_list, exim_list_notation, parse_config, split_list
from remediate.mta.lines import dominant_eol, split_lines
from tests.textdiff import diff, lines

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "exim"
TRUSTED = ["127.0.0.0/8", "::::1/128"]
EXPOSURE = {"open_relay", "anonymous_auth"}
UPDATE_CONF = ["restrict_relay_nets", "restrict_relay_domains"]
CONFIG = ["disable_open_authenticators", "restrict_acl_hosts", "ensure_relay_gate"]   # playbooks/exim.yaml order
GATE = ["  require", "    message = relay not permitted", "    domains = +local_domains : +relay_to_domains"]


def golden(name: str) -> str:
    """A golden file exactly as stored (CRLF and a missing final newline survive)."""
    return (GOLDEN / name).read_bytes().decode("utf-8")


def run(name: str, text: str, **extra: Any) -> str:
    kwargs: dict[str, Any] = {"trusted_networks": TRUSTED} if name in ("restrict_relay_nets",
                                                                       "restrict_acl_hosts") else {}
    result: str = getattr(rules, name)(text, **kwargs, **extra)
    return result


def apply_all(names: list[str], text: str) -> str:
    for name in names:
        text = run(name, text)
    return text


def found(findings: list[Any]) -> list[tuple[str, str | None, str | None, int | None]]:
    return [(f.code, f.parameter, f.file, f.line) for f in findings]


def exposures(texts: dict[str, str]) -> list[Any]:
    return [f for f in rules.audit(texts, trusted_networks=TRUSTED) if f.code in EXPOSURE]


# ---------------------------------------------------------------------------------------------------------
# Debian's stock files (exim4-config 4.96-15+deb12u11) are secure: nothing changes, nothing is reported.

DEBIAN_CONFIG = ["debian12-exim4.conf.template", "debian12-30_exim4-config_check_rcpt",
                 "debian12-30_exim4-config_check_mail", "debian12-30_exim4-config_examples",
                 "debian12-01_exim4-config_listmacrosdefs"]


@pytest.mark.parametrize("name", CONFIG)
@pytest.mark.parametrize("file", DEBIAN_CONFIG)
def test_debian_config_files_are_left_as_the_same_object(name: str, file: str) -> None:
    text = golden(file)
    assert run(name, text) is text


@pytest.mark.parametrize("name", UPDATE_CONF)
def test_debian_update_conf_is_left_as_the_same_object(name: str) -> None:
    text = golden("debian12-update-exim4.conf.conf")
    assert run(name, text) is text


def test_debian_stock_has_no_findings() -> None:
    texts = {"update_conf": golden("debian12-update-exim4.conf.conf"), "config": golden("debian12-exim4.conf.template")}
    assert rules.audit(texts, trusted_networks=TRUSTED) == []
    assert rules.audit(texts, trusted_networks=TRUSTED, policy="auth-all") == []
    split = {f"config:/etc/exim4/conf.d/x/{name}": golden(name) for name in DEBIAN_CONFIG[1:]}
    assert rules.audit({"update_conf": texts["update_conf"], **split}, trusted_networks=TRUSTED) == []


def test_debian_template_reads_like_exim() -> None:
    config = parse_config(golden("debian12-exim4.conf.template"))
    assert [acl.name for acl in config.acls] == ["acl_local_deny_exceptions", "acl_check_mail", "acl_check_rcpt",
                                                 "acl_check_data"]
    auth = [(d.name, d.value("driver")) for d in config.drivers if d.section == "authenticators"]
    assert auth == [("cram_md5", "cram_md5"), ("plain", "plaintext"), ("login", "plaintext")]
    assert config.named("hostlist") == {"relay_from_hosts": "MAIN_RELAY_NETS"}
    rcpt = next(acl for acl in config.acls if acl.name == "acl_check_rcpt")
    gate = next(s for s in rcpt.statements if s.verb == "require")
    assert (gate.first + 1, [(c.name, c.value) for c in gate.conditions]) == (
        719, [("message", "relay not permitted"), ("domains", "+local_domains : +relay_to_domains")])
    # A continued condition is one logical line; its value starts on the verb's line.
    many = next(s for s in rcpt.statements if s.first + 1 == 676)
    assert many.conditions[0].value == "${if and {{>{$rcpt_count}{10}}{<{$recipients_count}{${eval:$rcpt_count/2}}} }}"


# ---------------------------------------------------------------------------------------------------------
# The scenarios: each golden input, what audit says, and its expected result (`NAME.expected`).

SCENARIOS = {
    "open-relay-nets.update-exim4.conf.conf": [("open_relay", "dc_relay_nets", 25)],
    "messy.update-exim4.conf.conf": [("open_relay", "dc_relay_nets", 7), ("open_relay", "dc_relay_domains", 5)],
    "anonymous-auth.exim4.conf.template": [("anonymous_auth", "anon_server", 1875)],
    "no-relay-gate.30_exim4-config_check_rcpt": [("open_relay", "acl_check_rcpt", 352)],
    "open-relay-hosts.exim4.conf": [("open_relay", "relay_from_hosts", 8)],
    "any-host-accept.exim4.conf": [("open_relay", "acl_check_rcpt", 38),
                                   ("relay_from_hosts_unused", "relay_from_hosts", 8)],
    "messy.exim4.conf": [("anonymous_auth", "sasl_anon", 39), ("anonymous_auth", "plain_everyone", 43),
                         ("open_relay", "relay_from_hosts", 5), ("open_relay", "acl_check_rcpt", 35),
                         ("open_relay", "acl_check_rcpt", 29), ("open_relay", "acl_check_mail", 16)],
}


def texts_of(name: str, text: str) -> dict[str, str]:
    return {"update_conf" if "update-exim4" in name else "config": text}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_audit_names_file_line_and_parameter(name: str) -> None:
    paths = {"update_conf": f"/etc/exim4/{name}", "config": f"/etc/exim4/{name}"}
    findings = rules.audit(texts_of(name, golden(name)), paths, trusted_networks=TRUSTED)
    assert [(f.code, f.parameter, f.line) for f in findings] == SCENARIOS[name]
    assert {f.file for f in findings} == {f"/etc/exim4/{name}"} and {f.source for f in findings} == {"config"}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_matches_its_golden_result_and_is_then_clean(name: str) -> None:
    before = golden(name)
    after = apply_all(UPDATE_CONF if "update-exim4" in name else CONFIG, before)
    assert after == golden(f"{name}.expected")
    assert exposures(texts_of(name, after)) == []
    assert apply_all(UPDATE_CONF if "update-exim4" in name else CONFIG, after) == after
    assert [f.code for f in rules.audit(texts_of(name, after), trusted_networks=TRUSTED)] == []


def test_wide_relay_nets_become_empty() -> None:
    before = golden("open-relay-nets.update-exim4.conf.conf")
    assert diff(before, run("restrict_relay_nets", before)) == (["dc_relay_nets='0.0.0.0/0'\n"],
                                                                 ["dc_relay_nets=''\n"])
    finding = rules.audit({"update_conf": before}, trusted_networks=TRUSTED)[0]
    assert "'0.0.0.0/0'" in finding.detail and "Do NOT list 0.0.0.0/0!" in finding.detail


def test_anonymous_authenticator_is_commented_out_line_by_line() -> None:
    before = golden("anonymous-auth.exim4.conf.template")
    block = ["anon_server:\n", "  driver = plaintext\n", "  public_name = ANONYMOUS\n", "  server_prompts = :\n",
             "  server_condition = yes\n"]
    assert diff(before, run("disable_open_authenticators", before)) == (block, ["# remediate: " + b for b in block])


def test_missing_relay_gate_goes_back_after_the_authenticated_accept() -> None:
    before = golden("no-relay-gate.30_exim4-config_check_rcpt")
    after = run("ensure_relay_gate", before)
    assert diff(before, after) == ([], [g + "\n" for g in GATE])
    assert after.split("\n")[194:200] == ["    authenticated = *", "    control = submission/sender_retain",
                                          "    control = dkim_disable_verify", *GATE]


def test_any_host_accept_gets_relay_from_hosts() -> None:
    before = golden("any-host-accept.exim4.conf")
    assert diff(before, run("restrict_acl_hosts", before)) == (["  accept  hosts         = 0.0.0.0/0\n"],
                                                               ["  accept  hosts         = +relay_from_hosts\n"])


def test_messy_files_keep_crlf_comments_and_the_missing_final_newline() -> None:
    # CRLF proves byte preservation only: Exim 4.96 itself misreads ".endif\r" (checked with exim4 -bV).
    after = golden("messy.exim4.conf.expected")
    assert "\n" not in after.replace("\r\n", "") and after.endswith("client_send = : user : secret")
    assert "hostlist relay_from_hosts = <; 127.0.0.1 ; ::1\r\n    # the branch office" in after
    assert "  accept  authenticated = *\r\n  require\r\n    message = relay not permitted\r\n" \
           "    domains = +local_domains\r\n  # the relay check" in after   # relay_to_domains is not defined there
    update = golden("messy.update-exim4.conf.conf.expected")
    assert 'dc_relay_nets="<; 127.0.0.1 ; ::ffff:127.0.0.2" # hand edit\r\n' in update
    assert "dc_relay_domains='backup.example.com'\r\n" in update


def test_split_config_findings_name_each_real_file() -> None:
    main = "/etc/exim4/conf.d/main/01_exim4-config_listmacrosdefs"
    acl = "/etc/exim4/conf.d/acl/30_exim4-config_check_rcpt"
    auth = "/etc/exim4/conf.d/auth/30_exim4-config_examples"
    texts = {f"config:{main}": golden("debian12-01_exim4-config_listmacrosdefs"),
             f"config:{acl}": golden("no-relay-gate.30_exim4-config_check_rcpt"),
             f"config:{auth}": golden("debian12-30_exim4-config_examples") + "\nanon:\n  driver = plaintext\n"
             "  public_name = ANONYMOUS\n  server_condition = ${if true}\n"}
    assert found(rules.audit(texts, trusted_networks=TRUSTED)) == [
        ("open_relay", "acl_check_rcpt", acl, 352),
        ("anonymous_auth", "anon", auth, len(golden("debian12-30_exim4-config_examples").splitlines()) + 2)]
    # The playbook's own names work too, with their paths.
    texts = {"rcpt_acl": golden("no-relay-gate.30_exim4-config_check_rcpt")}
    assert found(rules.audit(texts, {"rcpt_acl": acl}, trusted_networks=TRUSTED)) == [
        ("open_relay", "acl_check_rcpt", acl, 352)]


# ---------------------------------------------------------------------------------------------------------
# Lists, notation and update-exim4.conf.conf.

@pytest.mark.parametrize(("value", "separator", "items"), [
    ("127.0.0.1 : ::::1", ":", ["127.0.0.1", "::1"]),
    ("127.0.0.1 :::::1", ":", ["127.0.0.1 ::", "1"]),          # spec 6.20: the space matters
    ("<; 127.0.0.1 ; ::1", ";", ["127.0.0.1", "::1"]),
    ("a : : b", ":", ["a", "", "b"]),
    ("a::b", ":", ["a:b"]),
    ("user@domain :", ":", ["user@domain"]),                  # spec 6.22: a trailing empty item is ignored
    (":", ":", [""]),
    ("", ":", []),
    ("<, a , ! b,,c", ",", ["a", "b,c"]),
])
def test_exim_lists(value: str, separator: str, items: list[str]) -> None:
    parsed = split_list(value)
    assert (parsed.separator, [item.text for item in parsed.items]) == (separator, items)


def test_debian_lists_switch_to_semicolons_like_update_exim4_conf() -> None:
    assert [i.text for i in debian_list("192.168.0.0/16;fe80::1/64").items] == ["192.168.0.0/16", "fe80::1/64"]
    assert [i.text for i in debian_list("10.0.0.0/8 : fe80::::1/64").items] == ["10.0.0.0/8", "fe80::1/64"]


@pytest.mark.parametrize(("network", "notation"), [
    ("10.0.0.0/8", "10.0.0.0/8"), ("::1/128", "::::1/128"), ("2001:db8::/32", "2001::db8::::/32"),
    ("fe80::1/128", "fe80::::1/128"), ("192.0.2.7/32", "192.0.2.7/32")])
def test_exim_list_notation_doubles_ipv6_colons(network: str, notation: str) -> None:
    rendered = exim_list_notation(ipaddress.ip_network(network))
    assert rendered == notation
    assert [i.text for i in split_list(f"127.0.0.1 : {rendered}").items] == ["127.0.0.1", network]


@pytest.mark.parametrize("bad", [["::1/128"], ["2001:db8::/32"], ["mail.example.net"], ["10.0.0.0/33"],
                                 "127.0.0.0/8", [None]])
def test_trusted_networks_must_be_in_exim_notation(bad: Any) -> None:
    for call in (lambda: rules.restrict_relay_nets("", trusted_networks=bad),
                 lambda: rules.restrict_acl_hosts("", trusted_networks=bad),
                 lambda: rules.audit({}, trusted_networks=bad)):
        with pytest.raises(ConfigError):
            call()


def test_audit_refuses_an_unknown_policy() -> None:
    with pytest.raises(ConfigError):
        rules.audit({}, trusted_networks=TRUSTED, policy="open")


@pytest.mark.parametrize(("line", "expected"), [
    ("dc_relay_nets='0.0.0.0/0'", "dc_relay_nets=''"),
    ("dc_relay_nets='127.0.0.1 : 10.0.0.0/8 : ::::1'", "dc_relay_nets='127.0.0.1 : ::::1'"),
    ("dc_relay_nets='10.0.0.0/8;127.0.0.0/24;fe80::1/64;::1'", "dc_relay_nets='127.0.0.0/24;::1'"),
    ('dc_relay_nets="0.0.0.0/0 ; 127.0.0.1" # note', 'dc_relay_nets="127.0.0.1" # note'),
    ("dc_relay_nets=0.0.0.0/0:127.0.0.1", "dc_relay_nets=127.0.0.1"),
    ("dc_relay_nets='relay.example.net'", "dc_relay_nets=''"),
    ("dc_relay_nets='!127.0.0.9 : 0.0.0.0/0'", "dc_relay_nets='!127.0.0.9'"),
    ("dc_relay_nets='127.0.0.1 : ::::ffff::127.0.0.2'", None),
    ("dc_relay_nets='::::ffff:127.0.0.2'", "dc_relay_nets='127.0.0.2'"),   # an undoubled colon splits it
    ("dc_relay_nets='fe80::1/64;::1'", "dc_relay_nets='<; ::1'"),   # a bare '::1' would break relay_from_hosts
    ("dc_relay_nets=''", None),
    ("dc_relay_nets='MY_NETS'", None),                       # a macro is judged where it is defined
])
def test_relay_nets(line: str, expected: str | None) -> None:
    text = f"# conf\ndc_other_hostnames='example.org'\n{line}\ndc_relay_nets_x='0.0.0.0/0'\n"
    after = run("restrict_relay_nets", text)
    assert after == (text.replace(line, expected) if expected is not None else text)
    assert (after is text) == (expected is None)


def test_only_the_last_relay_nets_assignment_counts() -> None:
    text = "dc_relay_nets='0.0.0.0/0'\n#dc_relay_nets='0.0.0.0/0'\ndc_relay_nets='127.0.0.1'\n"
    assert run("restrict_relay_nets", text) is text
    assert rules.update_conf_value(text, "dc_relay_nets") == "127.0.0.1"
    assert rules.update_conf_value("dc_use_split_config=\"true\"\n", "dc_use_split_config") == "true"
    assert rules.update_conf_value("", "dc_use_split_config") is None


@pytest.mark.parametrize(("value", "expected"), [
    ("*", ""), ("*.com", ""), ("*.co.uk", ""), ("backup.example.com : *", "backup.example.com"),
    ("*;backup.example.com", "backup.example.com"),
    ("backup.example.com : !internal.example.com", "backup.example.com"),
    ("!internal.example.com", ""), ("backup.example.com", None), ("*.example.com", None),
    ("!a.example.com : *.example.com", None), ("", None)])
def test_relay_domains(value: str, expected: str | None) -> None:
    text = f"dc_relay_domains='{value}'\r\n"
    after = run("restrict_relay_domains", text)
    assert after == (f"dc_relay_domains='{expected}'\r\n" if expected is not None else text)
    assert [f.code for f in exposures({"update_conf": text})] == ([] if expected is None else ["open_relay"])


def test_update_conf_findings_say_when_the_config_read_ignores_them() -> None:
    texts = {"update_conf": "dc_relay_nets='0.0.0.0/0'\n", "config": golden("open-relay-hosts.exim4.conf")}
    finding = rules.audit(texts, trusted_networks=TRUSTED)[0]
    assert finding.parameter == "dc_relay_nets" and "does not use MAIN_RELAY_NETS" in finding.detail
    # The template uses it; a conf.d fragment alone (the driver's split files) cannot tell, so no note.
    for config in (golden("debian12-exim4.conf.template"), golden("debian12-30_exim4-config_check_rcpt")):
        finding = rules.audit({**texts, "config": config}, trusted_networks=TRUSTED)[0]
        assert finding.parameter == "dc_relay_nets" and "does not use" not in finding.detail


# ---------------------------------------------------------------------------------------------------------
# Authenticators.

@pytest.mark.parametrize(("block", "open_"), [
    ("driver = plaintext\npublic_name = ANONYMOUS\nserver_prompts = :\nserver_condition = yes", True),
    ("driver = plaintext\npublic_name = anonymous\nserver_condition = ${if eq{$auth1}{x}}", True),
    ("driver = plaintext\npublic_name = PLAIN\nserver_condition = ${if true}", True),
    ("driver = plaintext\npublic_name = PLAIN\nserver_condition = \"1\"", True),
    ("driver = plaintext\npublic_name = PLAIN\nserver_condition = ${if !false {yes}{no}}", True),
    ("driver = plaintext\npublic_name = PLAIN\nserver_condition = ALWAYS", True),      # ALWAYS = yes, below
    ("driver = cyrus_sasl\npublic_name = ANONYMOUS", True),
    ("driver = cyrus_sasl\nserver_mech = anonymous", True),
    ("driver = gsasl\nserver_mech = ANONYMOUS\nserver_condition = ${if def:auth1}", True),
    ("driver = gsasl\npublic_name = PLAIN\nserver_condition = true", True),
    ("driver = external\npublic_name = EXTERNAL\nserver_condition = yes", True),
    ("driver = plaintext\npublic_name = PLAIN\nserver_condition = ${if crypteq{$auth3}{x}{1}{0}}", False),
    ("driver = plaintext\npublic_name = PLAIN\nserver_condition = ${if true {no}}", False),
    ("driver = plaintext\npublic_name = ANONYMOUS\nclient_send = : anonymous", False),   # client only
    ("driver = plaintext\npublic_name = ANONYMOUS\nserver_prompts = :", False),          # no server_condition
    ("driver = cram_md5\npublic_name = CRAM-MD5\nserver_secret = x\nserver_condition = yes", False),
    ("driver = gsasl\npublic_name = SCRAM-SHA-1\nserver_condition = yes\nserver_password = x", False),
    ("driver = cyrus_sasl\npublic_name = PLAIN", False),
    ("driver = accept\npublic_name = ANONYMOUS", False),                                  # not an authenticator
])
def test_open_authenticators(block: str, open_: bool) -> None:
    body = "".join(f"  {line}\n" for line in block.split("\n"))
    text = f"ALWAYS = yes\nbegin authenticators\n\n# doc\nthe_auth:\n{body}\nother:\n  driver = plaintext\n"
    after = run("disable_open_authenticators", text)
    if not open_:
        assert after is text and exposures({"config": text}) == []
        return
    assert after == text.replace(f"the_auth:\n{body}", "".join(f"# remediate: {line}\n" for line in
                                                                 ["the_auth:", *body.splitlines()]))
    assert [f.parameter for f in exposures({"config": text})] == ["the_auth"]


def test_authenticators_outside_the_authenticators_section_are_not_judged() -> None:
    text = "begin routers\nanon:\n  driver = plaintext\n  public_name = ANONYMOUS\n  server_condition = yes\n"
    assert run("disable_open_authenticators", text) is text


def test_commenting_out_keeps_directives_comments_and_continuations() -> None:
    text = ("begin authenticators\r\nanon:\r\n  driver = plaintext\r\n.ifdef X\r\n  public_name = ANONYMOUS\r\n"
            ".endif\r\n  # why\r\n  server_condition = ${if \\\r\n     true}\r\nMACRO = 1\r\n")
    assert run("disable_open_authenticators", text) == (
        "begin authenticators\r\n# remediate: anon:\r\n# remediate:   driver = plaintext\r\n.ifdef X\r\n"
        "# remediate:   public_name = ANONYMOUS\r\n.endif\r\n  # why\r\n# remediate:   server_condition = ${if \\\r\n"
        "# remediate:      true}\r\nMACRO = 1\r\n")


# ---------------------------------------------------------------------------------------------------------
# The relay gate.

def rcpt(*statements: str, head: str = "") -> str:
    return head + "begin acl\n\nacl_check_rcpt:\n" + "".join(f"  {s}\n" for s in statements)


@pytest.mark.parametrize(("statements", "gated"), [
    (["accept hosts = +relay_from_hosts", "accept authenticated = *", "require verify = recipient", "accept"], False),
    (["require message = relay not permitted\n    domains = +local_domains : +relay_to_domains", "accept"], True),
    (["require domains = +local_domains", "accept"], True),
    (["deny message = relay not permitted\n    !authenticated = *\n    !hosts = +relay_from_hosts\n"
      "    !domains = +local_domains : +relay_to_domains", "accept"], True),
    (["require domains = *", "accept"], False),
    (["require domains = +local_domains : *.org", "accept"], False),
    (["deny !domains = +local_domains\n    dnslists = zen.example", "accept"], False),
    (["accept local_parts = postmaster\n    domains = +local_domains", "accept domains = +relay_to_domains"], True),
    (["accept local_parts = postmaster"], False),
    (["accept verify = recipient"], False),
    (["accept condition = ${if false}"], True),
    (["accept hosts = +relay_from_hosts"], True),
    ([], True),
])
def test_relay_gate_judgement(statements: list[str], gated: bool) -> None:
    text = rcpt(*statements)
    after = run("ensure_relay_gate", text)
    assert (after is text) == gated
    assert [f.parameter for f in exposures({"config": text})] == ([] if gated else ["acl_check_rcpt"])
    assert exposures({"config": after}) == []


def test_relay_gate_goes_after_the_last_grant_at_the_acl_depth() -> None:
    text = rcpt("accept hosts = :", ".ifdef X\n  accept authenticated = *\n    control = submission\n.endif",
                "# the opener\n  accept")
    assert run("ensure_relay_gate", text) == rcpt(
        "accept hosts = :", ".ifdef X\n  accept authenticated = *\n    control = submission\n.endif",
        "\n".join(GATE)[2:], "# the opener\n  accept")
    no_grant = rcpt("deny dnslists = zen.example", "accept")
    assert run("ensure_relay_gate", no_grant) == rcpt("deny dnslists = zen.example", "\n".join(GATE)[2:], "accept")


def test_relay_gate_names_the_domain_lists_in_view_and_keeps_the_line_ending() -> None:
    text = rcpt("accept", head="domainlist local_domains = @\n").replace("\n", "\r\n").removesuffix("\r\n")
    assert run("ensure_relay_gate", text).endswith("acl_check_rcpt:\r\n  require\r\n    message = relay not "
                                                   "permitted\r\n    domains = +local_domains\r\n  accept")
    fragment = "acl_check_rcpt:\n  accept\n"
    assert GATE[2] in run("ensure_relay_gate", fragment)
    assert "domains = +relay_to_domains\n" in run("ensure_relay_gate", fragment,
                                                  context="domainlist relay_to_domains = x.org\n")


def test_relay_gate_follows_acl_smtp_rcpt() -> None:
    text = "acl_smtp_rcpt = RCPT\nRCPT = my_rcpt\nbegin acl\nacl_check_rcpt:\n  accept\nmy_rcpt:\n  accept\n"
    assert run("ensure_relay_gate", text) == text.replace("my_rcpt:\n", "my_rcpt:\n" + "\n".join(GATE) + "\n")


# ---------------------------------------------------------------------------------------------------------
# Hosts in ACLs and relay_from_hosts.

@pytest.mark.parametrize(("statement", "changed"), [
    ("accept hosts = 0.0.0.0/0", True),
    ("accept hosts = *\n    control = submission", True),
    ("accept hosts = 127.0.0.1 : 10.0.0.0/8", True),
    ("accept hosts = !10.0.0.1", True),                     # ends negative: every other host
    ("accept hosts = mail.example.net", True),
    ("accept hosts = net-lsearch;/etc/exim4/relay", True),
    ("accept hosts = OTHERS", True),                        # OTHERS = 192.0.2.0/24, defined in the text
    ("accept hosts = +partners", True),
    ("accept hosts = +nowhere", True),
    ("accept hosts = 127.0.0.1 : ::::1 : :", False),
    ("accept hosts = OUTSIDE_MACRO", False),                # defined elsewhere, judged there
    ("accept hosts = 0.0.0.0/0\n    authenticated = *", False),
    ("accept hosts = 0.0.0.0/0\n    domains = +local_domains", False),
    ("accept hosts = 0.0.0.0/0\n    hosts = 127.0.0.1", False),
    ("deny hosts = 0.0.0.0/0", False),
])
def test_accept_hosts_outside_the_trusted_networks(statement: str, changed: bool) -> None:
    head = "OTHERS = 192.0.2.0/24\nhostlist partners = 198.51.100.0/24\nhostlist relay_from_hosts = 127.0.0.1\n"
    text = rcpt(statement, "require domains = +local_domains", "accept", head=head)
    after = run("restrict_acl_hosts", text)
    assert (after is not text) == changed
    if changed:
        value = statement.split("hosts = ", 1)[1].split("\n")[0]
        assert after == text.replace(f"hosts = {value}", "hosts = +relay_from_hosts", 1)
        assert [f.line for f in exposures({"config": text})] == [7]
    assert exposures({"config": after}) == []


def test_hosts_after_the_gate_and_multi_line_values() -> None:
    after_gate = rcpt("require domains = +local_domains", "accept hosts = 0.0.0.0/0")
    assert run("restrict_acl_hosts", after_gate) is after_gate
    text = rcpt("accept  hosts = 127.0.0.1 : \\\n  # c\n      0.0.0.0/0\n    control = submission", "accept")
    assert run("restrict_acl_hosts", text) == rcpt(
        "accept  hosts = 127.0.0.0/8 : ::::1/128\n  # c\n    control = submission", "accept")  # no relay_from_hosts


def test_a_fragment_gets_relay_from_hosts_and_context_resolves_names() -> None:
    fragment = "acl_check_rcpt:\n  accept hosts = +office\n  accept\n"
    assert run("restrict_acl_hosts", fragment) == fragment.replace("+office", "+relay_from_hosts")
    assert run("restrict_acl_hosts", fragment, context="hostlist office = 127.0.0.3\n") is fragment


def test_deny_gate_exemptions_are_judged_as_hosts() -> None:
    gate = "deny !authenticated = *\n    !hosts = 192.0.2.0/24\n    !domains = +local_domains"
    text = rcpt(gate, "accept", head="hostlist relay_from_hosts = 127.0.0.1\n")
    assert run("ensure_relay_gate", text) is text
    assert run("restrict_acl_hosts", text) == text.replace("!hosts = 192.0.2.0/24", "!hosts = +relay_from_hosts")


def test_mail_acl_hosts_that_skip_a_demand_for_authentication() -> None:
    demand = "deny condition = ${if eq{$received_port}{587}}\n    !authenticated = *"
    text = "begin acl\nacl_check_mail:\n  accept hosts = 0.0.0.0/0\n  " + demand + "\n  accept\n"
    assert run("restrict_acl_hosts", text) == text.replace("0.0.0.0/0", "127.0.0.0/8 : ::::1/128")
    harmless = "begin acl\nacl_check_mail:\n  accept hosts = 0.0.0.0/0\n  accept\n"
    assert run("restrict_acl_hosts", harmless) is harmless


@pytest.mark.parametrize(("value", "expected"), [
    ("0.0.0.0/0", "127.0.0.0/8 : ::::1/128"),
    ("127.0.0.1 : 10.0.0.0/8", "127.0.0.1"),
    ("<; ::1 ; 2001:db8::/32", "<; ::1"),
    ("<; 2001:db8::/32", "<; 127.0.0.0/8 ; ::1/128"),
    ("!127.0.0.9 : 127.0.0.0/8 : !10.1.1.1 : 10.0.0.0/8", "!127.0.0.9 : 127.0.0.0/8"),
    ("127.0.0.1 : !127.0.0.2", "127.0.0.1"),
    (": 0.0.0.0/0", ":"),
    ("localhost", "127.0.0.0/8 : ::::1/128"),
    ("127.0.0.1 : ::::1", None),
    ("MAIN_RELAY_NETS", None),
    ("", None),
])
def test_relay_from_hosts_keeps_only_trusted_items(value: str, expected: str | None) -> None:
    text = f"hostlist relay_from_hosts = {value}\nbegin acl\nacl_check_rcpt:\n  accept hosts = +relay_from_hosts\n"
    after = run("restrict_acl_hosts", text)
    assert after == (text if expected is None else text.replace(f"= {value}\n", f"= {expected}\n", 1))
    assert [f.parameter for f in exposures({"config": text})] == ([] if expected is None else ["relay_from_hosts"])


def test_relay_from_hosts_unused_is_informational() -> None:
    text = "hostlist relay_from_hosts = 127.0.0.1\nbegin acl\nacl_check_rcpt:\n  require domains = +local_domains\n"
    assert [(f.code, f.line) for f in rules.audit({"config": text}, trusted_networks=TRUSTED)] == [
        ("relay_from_hosts_unused", 1)]
    used = text.replace("  require", "  accept hosts = +relay_from_hosts\n  require")
    assert rules.audit({"config": used}, trusted_networks=TRUSTED) == []


# ---------------------------------------------------------------------------------------------------------
# Generated files: the three laws, and agreement between transforms and audit.

STATEMENTS = [
    "accept hosts = :", "accept hosts = +relay_from_hosts\n  control = submission", "accept hosts = 0.0.0.0/0",
    "accept  hosts = 127.0.0.1 : \\\n      10.0.0.0/8", "accept hosts = 10.9.0.0/16\n  authenticated = *",
    "accept authenticated = *", "accept local_parts = postmaster\n  domains = +local_domains",
    "accept local_parts = postmaster", "require message = relay not permitted\n  domains = +local_domains",
    "deny !authenticated = *\n  !hosts = 192.0.2.0/24\n  !domains = +local_domains : +relay_to_domains",
    "require verify = recipient", "deny dnslists = zen.example", "accept", "warn control = dkim_disable_verify",
    "accept domains = +relay_to_domains\n  endpass\n  verify = recipient", "accept hosts = !10.0.0.1",
    "accept hosts = RELAYNETS", "accept hosts = UNDEFINED_MACRO", "accept hosts = +partners",
    "deny condition = ${if eq{$received_port}{587}}\n  !authenticated = *", "accept verify = certificate"]
AUTHENTICATORS = [
    "anon:\n  driver = plaintext\n  public_name = ANONYMOUS\n  server_prompts = :\n  server_condition = yes",
    "plain_server:\n  driver = plaintext\n  public_name = PLAIN\n  server_condition = ${if \\\n    true}",
    "plain_real:\n  driver = plaintext\n  public_name = PLAIN\n  server_condition = \"${if crypteq{$auth3}{x}{1}{0}}\"",
    "cram:\n  driver = cram_md5\n  public_name = CRAM-MD5\n  server_secret = x",
    "client:\n  driver = plaintext\n  public_name = ANONYMOUS\n.ifdef X\n  client_send = : anon\n.endif",
    "sasl:\n  driver = cyrus_sasl\n  server_mech = anonymous", "ext:\n  driver = external\n  server_condition = AUTHOK"]
MAIN = ["hostlist relay_from_hosts = 127.0.0.1 : 0.0.0.0/0", "hostlist relay_from_hosts = <; ::1 ; \\\n  fe80::/10",
        "hostlist relay_from_hosts = MAIN_RELAY_NETS", "hostlist partners = 203.0.113.0/24",
        "hostlist partners = 127.0.0.2", "RELAYNETS = 10.20.0.0/16", "RELAYNETS = 127.0.0.5", "AUTHOK = yes",
        "domainlist local_domains = @", "acl_smtp_mail = acl_check_mail"]
NOISE = ["# a comment", "  # indented comment", "", "   ", ".ifdef X", ".endif", "#accept hosts = 0.0.0.0/0"]
UPDATE_LINES = ["dc_relay_nets='0.0.0.0/0'", "dc_relay_nets='127.0.0.1 ; 10.0.0.0/8'", "dc_relay_nets=''",
                'dc_relay_nets="::1;fe80::1/64" # x', "dc_relay_nets=127.0.0.1:192.0.2.0/24", "dc_relay_domains='*'",
                "dc_relay_domains='b.example.com : *.org : !c.example.com'", "dc_relay_domains='b.example.com'",
                "dc_use_split_config='false'", "# dc_relay_nets='0.0.0.0/0'", ""]


@st.composite
def config_texts(draw: Callable[..., Any]) -> str:
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    parts = draw(st.lists(st.sampled_from(MAIN + NOISE), max_size=6))
    fragment = draw(st.booleans())
    if not fragment:
        parts.append("begin acl")
    for acl in draw(st.lists(st.sampled_from(["acl_check_rcpt", "acl_check_mail"]), max_size=2)):
        parts.append(acl + ":")
        for _ in range(draw(st.integers(0, 6))):
            statement = draw(st.sampled_from(STATEMENTS + NOISE))
            parts.append(draw(st.sampled_from(["  ", "", "\t"])) + statement)
    if draw(st.booleans()):
        parts += ([] if fragment else ["begin authenticators"]) + draw(st.lists(st.sampled_from(AUTHENTICATORS),
                                                                                max_size=3))
    text = eol.join("\n".join(parts).split("\n"))
    return text + (eol if parts and draw(st.booleans()) else "")


@st.composite
def update_texts(draw: Callable[..., Any]) -> str:
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    body = draw(st.lists(st.sampled_from(UPDATE_LINES), max_size=8))
    return eol.join(body) + (eol if body and draw(st.booleans()) else "")


def check_laws(name: str, text: str) -> str:
    after = run(name, text)
    assert run(name, after) == after, f"{name} is not idempotent"
    if after == text:
        assert after is text, f"{name} returned an equal copy instead of the same object"
    return after


@given(config_texts())
def test_generated_configs_obey_the_laws_and_the_audit(text: str) -> None:
    for name in CONFIG:
        check_laws(name, text)
    for order in itertools.permutations(CONFIG):
        after = apply_all(list(order), text)
        assert exposures({"config": after}) == [], (order, after)
    if exposures({"config": text}):
        assert apply_all(CONFIG, text) != text   # every exposure names something a transform changes


@given(config_texts())
def test_generated_configs_change_only_what_each_transform_promises(text: str) -> None:
    removed, added = diff(text, run("disable_open_authenticators", text))
    assert added == ["# remediate: " + line for line in removed]
    removed, added = diff(text, run("ensure_relay_gate", text))
    assert {line.rstrip("\r\n") for line in added} <= {*GATE, "    domains = +local_domains"}
    assert [line.rstrip("\r\n") for line in removed] == [line.rstrip("\r\n") for line in added if line in removed]
    removed, added = diff(text, run("restrict_acl_hosts", text))
    assert len(added) <= len(removed)
    assert all(re.search(r"hosts\s*=|relay_from_hosts\s*=|^\s*[^#\s]", line) for line in removed)
    eols = {line[len(line.rstrip("\r\n")):] for line in lines(text)} | {"", dominant_eol(split_lines(text))}
    for name in CONFIG:
        assert {line[len(line.rstrip("\r\n")):] for line in lines(run(name, text))} <= eols


@given(update_texts())
def test_generated_update_confs_obey_the_laws_and_the_audit(text: str) -> None:
    for name in UPDATE_CONF:
        after = check_laws(name, text)
        removed, added = diff(text, after)
        assert len(removed) == len(added) <= 1
        assert all(line.split("=", 1)[0] == new.split("=", 1)[0] for line, new in zip(removed, added, strict=True))
    assert exposures({"update_conf": apply_all(UPDATE_CONF, text)}) == []


@given(st.text(alphabet=st.sampled_from(list("abcdhos:=!+*#.\\ \t\n\r'\";<>{}$01")), max_size=200))
def test_transforms_never_fail_on_arbitrary_text(text: str) -> None:
    for name in CONFIG + UPDATE_CONF:
        check_laws(name, text)
    rules.audit({"update_conf": text, "config": text}, trusted_networks=TRUSTED)
