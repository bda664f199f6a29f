"""Playbooks load once into frozen objects for their driver; a bad one is refused naming file, line and key,
and validation can never write a live file."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from remediate.errors import ConfigError, DriverError, ValidationError
from remediate.model import Host, Status
from remediate.mta import driver_for
from remediate.mta.base import PlaybookDriver, Simulation, private_path
from remediate.mta.playbook import PLAYBOOK_DIR, fill, load_playbook, resolve_args
from remediate.mta.postfix.driver import TRANSFORMS, PostfixDriver, literal_domains, mynetworks_notation
from remediate.shell import PosixShell
from remediate.transport import Local
from remediate.verdict import Verdict

POSTFIX = (PLAYBOOK_DIR / "postfix.yaml").read_text()
OPTIONS = PostfixDriver.simulate_options


def test_the_postfix_playbook_loads_with_both_policies_and_real_transforms():
    pb = driver_for("postfix").playbook
    assert set(pb.policies) == {"relay-auth", "auth-all"}
    assert pb.files == {"main_cf": "/etc/postfix/main.cf", "master_cf": "/etc/postfix/master.cf"}
    for policy in pb.policies.values():
        assert all(step.fn is TRANSFORMS[step.transform] for step in policy.steps)
    assert pb.policies["relay-auth"].expect_local == "accept"
    assert pb.policies["auth-all"].expect_local == "refuse"
    assert pb.reload == (("postfix", "reload"),) and pb.check == (("postfix", "-c", "/etc/postfix", "check"),)
    # validation (also a dry run's) never runs `postfix check`: it creates queue directories and runs
    # postsuper on the live queue whatever `-c` names; postconf's warnings and the smtpd session prove the copy
    assert pb.validate == (("postconf", "-c", "{dir}", "-n"), ("postconf", "-c", "{dir}", "-P"))
    # a written main.cf is dated 2 s back, so `postfix reload` does not wait for it to "cool down"
    assert pb.backdate_writes == 2
    # a reload that wedges the master is met by a restart, each step bounded (mail-domain.md section 9)
    assert pb.restart.stop == (("postfix", "stop"),) and pb.restart.start == (("postfix", "start"),)
    assert pb.restart.pidfile == "/var/spool/postfix/pid/master.pid" and pb.restart.kill_group
    assert pb.restart.answer_timeout + pb.restart.command_timeout + pb.restart.stop_timeout <= 60


@pytest.mark.parametrize(("mta", "pidfile"), [("exim", "/run/exim4/exim.pid"),
                                              ("sendmail", "/run/sendmail/mta/sendmail.pid")])
def test_exim_and_sendmail_can_be_restarted_within_a_minute(mta: str, pidfile: str) -> None:
    """A daemon that stops greeting after its activation is restarted (stop, SIGKILL through the pid file the
    daemon writes, start), not left silent: bounded like Postfix's."""
    restart = driver_for(mta).playbook.restart
    assert restart.stop and restart.start and restart.pidfile == pidfile
    assert restart.answer_timeout + restart.command_timeout + restart.stop_timeout <= 60


def _broken(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    text = POSTFIX.replace(old, new, 1)
    assert text != POSTFIX
    path = tmp_path / "postfix.yaml"
    path.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if new.splitlines()[-1] in ln)
    return path, line


@pytest.mark.parametrize(("old", "new", "key"), [
    ("transform: secure_relay_restrictions}", "transform: smtpd_authentication_required}",
     "policies.relay-auth.transforms[0].transform"),
    ("  - [postfix, reload]", "  - [postfix, reload]\nreboot: [[postfix, reboot]]", "reboot"),
    ("  stop_timeout: 5", "  stop_timeout: -5", "restart.stop_timeout"),
    ("  stop_timeout: 5", "  stop_timeout: 5\n  stop_signal: KILL", "restart.stop_signal"),
    ("  pidfile: /var/spool/postfix/pid/master.pid", "  pidfile: pid/master.pid", "restart.pidfile"),
    ("  start: [[postfix, start]]", "  start: [postfix start]", "restart.start[0]"),
    ("{file: main_cf, transform: ensure_noanonymous,", "{file: main.cf, transform: ensure_noanonymous,",
     "policies.relay-auth.transforms[3].file"),
    ("expect_local: refuse", "expect_local: maybe", "policies.auth-all.expect_local"),
    ("  master_cf: /etc/postfix/master.cf", "  master_cf: /var/lib/postfix/master.cf", "files.master_cf"),
    ("  xclient_addr: 203.0.113.9", "  xclient_addr: 203.0.113.9\n  helo: x", "simulate.helo"),
])
def test_a_bad_playbook_names_file_line_and_key(tmp_path, old, new, key):
    path, line = _broken(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_playbook(path, TRANSFORMS, OPTIONS)
    assert str(err.value).startswith(f"{path}:{line}: {key}: ")


def test_a_file_outside_the_validation_root_is_refused_at_load(tmp_path):
    path, _ = _broken(tmp_path, "  main_cf: /etc/postfix/main.cf", "  main_cf: /etc/postfix/../exim4/main.cf")
    with pytest.raises(ConfigError, match="outside config_dir /etc/postfix"):
        load_playbook(path, TRANSFORMS, OPTIONS)
    with pytest.raises(ValidationError, match="would write the live file"):
        private_path("/etc/exim4", "/tmp/copy", "/var/lib/exim4/config.autogenerated")
    assert private_path("/etc/postfix", "/tmp/copy", "/etc/postfix/sub/main.cf") == "/tmp/copy/sub/main.cf"


def test_an_mta_without_a_driver_says_which_drivers_exist():
    with pytest.raises(DriverError, match="drivers: postfix, exim, sendmail"):
        driver_for("exchange")


def test_placeholders_are_filled_from_the_drivers_variables_and_candidate_texts():
    host = Host("mx1", "10.0.0.1", trusted_networks=(ipaddress.ip_network("127.0.0.0/8"),
                                                     ipaddress.ip_network("::1/128")))
    variables = PostfixDriver().variables(host)
    args = resolve_args({"trusted_networks": "{host.trusted_networks}", "main_cf": "{file.main_cf}", "x": 1},
                        variables, {"main_cf": "mynetworks = 127.0.0.0/8\n"})
    assert args == {"trusted_networks": ["127.0.0.0/8", "[::1]/128"], "main_cf": "mynetworks = 127.0.0.0/8\n",
                    "x": 1}
    assert fill(("postfix", "-c", "{dir}", "check"), dir="/tmp/x") == ["postfix", "-c", "/tmp/x", "check"]


def test_postfix_notation_and_domain_lists_are_the_drivers_business():
    assert mynetworks_notation(ipaddress.ip_network("2001:db8::/32")) == "[2001:db8::]/32"
    assert literal_domains("mx1.example.org, localhost hash:/etc/postfix/relay /etc/x") == ("mx1.example.org",
                                                                                           "localhost")
    context = PostfixDriver().probe_context(Host("mx1", "10.0.0.1"), _facts(
        relay_restrictions="permit_mynetworks, defer_unauth_destination", myhostname="mx1.example.org",
        mydestination="mx1.example.org, localhost", relay_domains="partner.example, hash:/etc/x"))
    assert context.local_domain == "mx1.example.org" and context.deferral == "defer_unauth_destination"
    assert context.serving("sub.partner.example") == "relay_domains"
    assert context.serving("mx1.example.org") == "mydestination"
    assert context.serving("relaytest.example.net") is None
    assert context.own_domains == ("mx1.example.org",)   # localhost names are not forged as senders


def test_every_smtpd_port_reachable_from_outside_is_a_service_to_probe():
    from remediate.mta import Facts
    from remediate.mta.postfix.driver import smtp_services

    master = ("smtp inet n - y - 1 postscreen\nsmtpd pass - - y - - smtpd\n"
              "submission inet n - y - - smtpd\n  -o smtpd_sasl_auth_enable=yes\n"
              "smtps inet n - y - - smtpd\n  -o smtpd_tls_wrappermode=yes\n"
              "127.0.0.1:10025 inet n - n - - smtpd\n192.0.2.7:2525 inet n - n - - smtpd\n"
              "relay unix - - y - - smtp\n")
    assert [(s.name, s.port, s.implicit_tls, s.submission) for s in smtp_services(master)] == [
        ("submission", 587, False, True), ("smtps", 465, True, True), ("192.0.2.7:2525", 2525, False, False)]
    context = PostfixDriver().probe_context(Host("mx1", "10.0.0.1"), Facts({"master_cf": master.encode()}, {}, {}))
    assert [s.label for s in context.services] == ["submission (port 587)", "smtps (port 465)",
                                                   "192.0.2.7:2525 (port 2525)"]


def _facts(**outputs: str):
    from remediate.mta import Facts

    return Facts({}, {}, outputs)


class _Marked(PlaybookDriver):
    """A driver whose validation proves the private copy holds the candidate and the live file does not."""

    name = "marked"
    transforms = {"mark": lambda text: text if "candidate" in text else text + "candidate\n"}

    def simulate(self, shell, directory, host, policy):
        return Simulation(Verdict(Status.SECURE, (), ("simulated",), True), "simulated")


def test_validation_writes_only_the_private_copy_never_the_live_file(tmp_path):
    live = tmp_path / "etc" / "mta"
    live.mkdir(parents=True)
    (live / "main.cf").write_text("live\n")
    os.utime(live / "main.cf", ns=(1_000_000_000, 1_000_000_000))
    (tmp_path / "marked.yaml").write_text(f"""
mta: marked
config_dir: {live}
files: {{main: {live}/main.cf}}
policies:
  relay-auth: {{transforms: [{{file: main, transform: mark}}]}}
validate:
  - [grep, -q, candidate, "{{dir}}/main.cf"]
reload: [["true"]]
""")
    driver = _Marked(tmp_path)
    host = Host("local", "127.0.0.1")
    shell = PosixShell(Local(host))
    facts = driver.read(shell)
    cand = driver.candidate(facts, host, driver.playbook.policies["relay-auth"])
    assert cand.changed == ("main",)
    sim = driver.validate(shell, facts, cand, host, driver.playbook.policies["relay-auth"])
    assert sim.verdict.status is Status.SECURE   # grep found the candidate in the copy
    assert (live / "main.cf").read_text() == "live\n"
    assert (live / "main.cf").stat().st_mtime_ns == 1_000_000_000
