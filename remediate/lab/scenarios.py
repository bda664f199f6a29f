"""Starting states of lab hosts: the files each scenario writes over its MTA's Debian defaults.

Postfix scenarios: the base main.cf is what Debian 12's postfix package writes for an "Internet Site" with
TLS enabled; master.cf is the machine's own (the package default). Exim scenarios live in
`remediate.lab.exim_scenarios`. Each scenario returns the files it places in the host's private
filesystem, keyed by absolute path; `stock` is the root its MTA's packaged files are read from (the
machine's root, or the MTA's unpacked layer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from remediate.lab import exim_scenarios as exim
from remediate.lab import sendmail_scenarios as sendmail

DEBIAN_MAIN_CF = """\
# See /usr/share/postfix/main.cf.dist for a commented, more complete version


# Debian specific:  Specifying a file name will cause the first
# line of that file to be used as the name.  The Debian default
# is /etc/mailname.
#myorigin = /etc/mailname

smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
biff = no

# appending .domain is the MUA's job.
append_dot_mydomain = no

# Uncomment the next line to generate "delayed mail" warnings
#delay_warning_time = 4h

readme_directory = no

# See http://www.postfix.org/COMPATIBILITY_README.html -- default to 3.6 on
# fresh installs.
compatibility_level = 3.6



# TLS parameters
smtpd_tls_cert_file=/etc/ssl/remediate-lab/tls.pem
smtpd_tls_key_file=/etc/ssl/remediate-lab/tls.key
smtpd_tls_security_level=may

smtp_tls_CApath=/etc/ssl/certs
smtp_tls_security_level=may
smtp_tls_session_cache_database = btree:${{data_directory}}/smtp_scache


smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination
myhostname = {fqdn}
alias_maps = hash:/etc/aliases
alias_database = hash:/etc/aliases
myorigin = /etc/mailname
mydestination = $myhostname, {fqdn}, localhost.localdomain, localhost
relayhost =
mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128
mailbox_size_limit = 0
recipient_delimiter = +
inet_interfaces = all
inet_protocols = all
"""

SASL_SMTPD_CONF = "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: ANONYMOUS PLAIN LOGIN\n"

MESSY_TAIL = """\
#   mynetworks below were added by three different admins over the years
mynetworks   =    127.0.0.0/8
   [::1]/128
smtpd_helo_required=yes
# later "temporary" change, never reverted:
mynetworks =
\t127.0.0.0/8,
    # the partner range, ticket 4711
\t192.0.2.0/24 ,
    0.0.0.0/0
"""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A starting state of an `mta` host: `files(fqdn, stock)` builds {path: text}; `findings` says what a
    scan must find from outside."""

    name: str
    description: str
    findings: tuple[str, ...]
    files: Callable[[str, Path], dict[str, str]]
    sudo_user: bool = False
    mta: str = "postfix"


def _postfix(build: Callable[[str, str], dict[str, str]]) -> Callable[[str, Path], dict[str, str]]:
    """A Postfix scenario builder given the packaged master.cf."""
    return lambda fqdn, stock: build(fqdn, (stock / "etc/postfix/master.cf").read_text())


def _main(fqdn: str, extra: str = "", mynetworks: str | None = None) -> str:
    text = DEBIAN_MAIN_CF.format(fqdn=fqdn)
    if mynetworks is not None:
        text = text.replace("mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128",
                            f"mynetworks = {mynetworks}")
    return text + extra


DEBIAN_RELAY = "smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination"


def _restrictions(fqdn: str, lines: str) -> str:
    """Debian's main.cf with its smtpd_relay_restrictions line replaced by `lines`."""
    return _main(fqdn).replace(DEBIAN_RELAY, lines)


def _secure(fqdn: str, master: str) -> dict[str, str]:
    return {"/etc/postfix/main.cf": _main(fqdn), "/etc/postfix/master.cf": master}


def _open_relay(fqdn: str, master: str) -> dict[str, str]:
    return {"/etc/postfix/main.cf": _main(fqdn, mynetworks="0.0.0.0/0"), "/etc/postfix/master.cf": master}


def _anonymous_auth(fqdn: str, master: str) -> dict[str, str]:
    extra = "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_security_options =\n"
    return {"/etc/postfix/main.cf": _main(fqdn, extra), "/etc/postfix/master.cf": master,
            "/etc/postfix/sasl/smtpd.conf": SASL_SMTPD_CONF}


def _master_override(fqdn: str, master: str) -> dict[str, str]:
    smtp_line = next(line for line in master.splitlines() if line.startswith("smtp ")
                     and " inet " in line)
    master = master.replace(smtp_line + "\n", smtp_line + "\n  -o mynetworks=0.0.0.0/0\n", 1)
    return {"/etc/postfix/main.cf": _main(fqdn), "/etc/postfix/master.cf": master}


def _access_map(fqdn: str, master: str) -> dict[str, str]:
    text = _restrictions(fqdn, "smtpd_relay_restrictions = check_client_access cidr:/etc/postfix/client_access,\n"
                               "    permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination")
    return {"/etc/postfix/main.cf": text, "/etc/postfix/master.cf": master,
            "/etc/postfix/client_access": "# every client is OK: an open relay\n0.0.0.0/0 OK\n"}


def _messy(fqdn: str, master: str) -> dict[str, str]:
    text = _main(fqdn).replace("mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128\n", "")
    text = text.replace("biff = no", "biff=no  ").replace("mailbox_size_limit = 0",
                                                           "mailbox_size_limit\t=\t0")
    return {"/etc/postfix/main.cf": text + MESSY_TAIL, "/etc/postfix/master.cf": master}


def _sender_whitelist(fqdn: str, master: str) -> dict[str, str]:
    """Relay decided by the (forgeable) sender domain; the host serves acme.test but is not an MX."""
    text = _restrictions(fqdn, "smtpd_relay_restrictions = permit\nsmtpd_recipient_restrictions = "
                               "reject_non_fqdn_recipient, check_sender_access hash:/etc/postfix/allowed_senders, "
                               "reject")
    text = text.replace("localhost.localdomain, localhost", "localhost.localdomain, localhost, acme.test")
    return {"/etc/postfix/main.cf": text, "/etc/postfix/master.cf": master,
            "/etc/postfix/allowed_senders": "acme.test OK\n"}


def _recipient_whitelist(fqdn: str, master: str) -> dict[str, str]:
    text = _restrictions(fqdn, "smtpd_relay_restrictions =\nsmtpd_recipient_restrictions = check_recipient_access "
                               "regexp:/etc/postfix/recipient_checks.regexp, permit_mynetworks, "
                               "reject_unauth_destination")
    return {"/etc/postfix/main.cf": text, "/etc/postfix/master.cf": master,
            "/etc/postfix/recipient_checks.regexp": "/^postmaster@/ OK\n/^abuse@/ OK\n"}


def _anonymous_only(fqdn: str, master: str) -> dict[str, str]:
    extra = "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_security_options =\n"
    return {"/etc/postfix/main.cf": _main(fqdn, extra), "/etc/postfix/master.cf": master,
            "/etc/postfix/sasl/smtpd.conf": "pwcheck_method: auxprop\nmech_list: ANONYMOUS\n"}


def _inbound_refused(fqdn: str, master: str) -> dict[str, str]:
    """Relay closed, but every unauthenticated recipient refused, its own domains included."""
    extra = "smtpd_recipient_restrictions = permit_sasl_authenticated, reject\n"
    return {"/etc/postfix/main.cf": _main(fqdn, extra), "/etc/postfix/master.cf": master}


def _inbound_tempfail(fqdn: str, master: str) -> dict[str, str]:
    """Relay closed; mail for its own domain fails a lookup in a table that was never postmap'd (451)."""
    extra = ("smtpd_recipient_restrictions = reject_unauth_destination, "
             "check_recipient_access btree:/etc/postfix/never_built\n")
    return {"/etc/postfix/main.cf": _main(fqdn, extra), "/etc/postfix/master.cf": master}


def _indirect(fqdn: str, master: str) -> dict[str, str]:
    text = _main(fqdn, mynetworks="$my_trusted").replace(
        "mynetworks = $my_trusted", "my_trusted = 127.0.0.0/8, 0.0.0.0/0\nmynetworks = $my_trusted")
    return {"/etc/postfix/main.cf": text, "/etc/postfix/master.cf": master}


def _subnet_style(fqdn: str, master: str) -> dict[str, str]:
    text = _main(fqdn).replace("mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128\n",
                               "mynetworks_style = subnet\n")
    return {"/etc/postfix/main.cf": text, "/etc/postfix/master.cf": master}


def _cidr_host_bits(fqdn: str, master: str) -> dict[str, str]:
    return {"/etc/postfix/main.cf": _main(fqdn, mynetworks="127.0.0.0/8 10.0.0.1/8"),
            "/etc/postfix/master.cf": master}


def _extra_services(fqdn: str, master: str) -> dict[str, str]:
    """Port 25 is fine; submission (587) is broken by a relay list without a relay stop (smtpd's own safety
    check makes it exit on every connection), and smtps (465, TLS from the first byte) trusts everyone."""
    master += ("submission inet n       -       y       -       -       smtpd\n"
               "  -o syslog_name=postfix/submission\n"
               "  -o smtpd_relay_restrictions=permit_mynetworks,permit\n"
               "smtps     inet  n       -       y       -       -       smtpd\n"
               "  -o syslog_name=postfix/smtps\n"
               "  -o smtpd_tls_wrappermode=yes\n"
               "  -o mynetworks=0.0.0.0/0\n")
    return {"/etc/postfix/main.cf": _main(fqdn), "/etc/postfix/master.cf": master}


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("open-relay", "mynetworks = 0.0.0.0/0", ("open_relay",), _postfix(_open_relay)),
    Scenario("anonymous-auth", "Cyrus SASL with ANONYMOUS and empty smtpd_sasl_security_options",
             ("anonymous_auth",), _postfix(_anonymous_auth)),
    Scenario("master-override", "main.cf safe; master.cf smtp service has -o mynetworks=0.0.0.0/0",
             ("open_relay",), _postfix(_master_override)),
    Scenario("access-map", "check_client_access cidr table answering OK for every client",
             ("open_relay",), _postfix(_access_map)),
    Scenario("secure", "Debian's defaults", (), _postfix(_secure)),
    Scenario("messy", "continuation lines, comments, mynetworks set twice (last, open, wins)",
             ("open_relay",), _postfix(_messy)),
    Scenario("sudo-user", "as open-relay, reached as a non-root user with become",
             ("open_relay",), _postfix(_open_relay), sudo_user=True),
    Scenario("sender-whitelist", "relay for any sender claiming acme.test (check_sender_access OK); not an MX",
             ("open_relay", "inbound_refused"), _postfix(_sender_whitelist)),
    Scenario("recipient-whitelist", "postmaster@ and abuse@ any domain relayed (check_recipient_access OK "
             "ahead of reject_unauth_destination)", ("open_relay",), _postfix(_recipient_whitelist)),
    Scenario("anonymous-only", "SASL whose only mechanism is ANONYMOUS", ("anonymous_auth",),
             _postfix(_anonymous_only)),
    Scenario("inbound-refused", "relay closed; every unauthenticated recipient refused, own domains included",
             ("inbound_refused",), _postfix(_inbound_refused)),
    Scenario("inbound-tempfail", "relay closed; own-domain mail fails a lookup in a missing table (451)",
             ("inbound_tempfail",), _postfix(_inbound_tempfail)),
    Scenario("indirect-mynetworks", "mynetworks = $my_trusted, which holds 0.0.0.0/0", ("open_relay",),
             _postfix(_indirect)),
    Scenario("subnet-style", "mynetworks_style = subnet: the whole lab subnet, prober included, may relay",
             ("open_relay",), _postfix(_subnet_style)),
    Scenario("extra-services", "submission (587) broken by its -o relay list, smtps (465) relaying for anyone",
             ("open_relay", "service_broken"), _postfix(_extra_services)),
    Scenario("cidr-host-bits", "mynetworks with 10.0.0.1/8 (host bits set): all of 10/8 may relay",
             ("open_relay",), _postfix(_cidr_host_bits)),
    Scenario("exim-secure", "Debian's exim4-config for an internet site", (), exim.secure, mta="exim"),
    Scenario("exim-relay-nets", "dc_relay_nets='0.0.0.0/0'", ("open_relay",), exim.relay_nets, mta="exim"),
    Scenario("exim-anonymous", "an always-succeeding plaintext authenticator advertised as ANONYMOUS",
             ("anonymous_auth", "open_relay"), exim.anonymous, mta="exim"),
    Scenario("exim-shadowing", "a hand-written /etc/exim4/exim4.conf (relay_from_hosts 0.0.0.0/0) shadows the "
             "generated one", ("open_relay",), exim.shadowing, mta="exim"),
    Scenario("exim-split-no-gate", "split configuration; the RCPT ACL lost its relay gate (smarthost system)",
             ("open_relay",), exim.split_gate_removed, mta="exim"),
    Scenario("exim-unused-relay-nets", "relay_from_hosts narrowed but the ACL accepts hosts = 0.0.0.0/0",
             ("open_relay",), exim.relay_from_hosts_unused, mta="exim"),
    Scenario("sendmail-secure", "Debian's sendmail.mc, the MTA listening on every address", (), sendmail.secure,
             mta="sendmail"),
    Scenario("sendmail-promiscuous", "FEATURE(`promiscuous_relay')", ("open_relay",), sendmail.promiscuous,
             mta="sendmail"),
    Scenario("sendmail-connect-octets", "access: Connect:10 RELAY and Connect:172 RELAY (all of 10/8 and 172/8)",
             ("open_relay",), sendmail.connect_octets, mta="sendmail"),
    Scenario("sendmail-to-relay", "access: To:partner.example RELAY (a foreign domain)", (), sendmail.to_relay,
             mta="sendmail"),
    Scenario("sendmail-anonymous", "ANONYMOUS in confAUTH_MECHANISMS and TRUST_AUTH_MECH",
             ("anonymous_auth", "open_relay"), sendmail.anonymous, mta="sendmail"),
    Scenario("sendmail-all-addresses", "the loopback-only DAEMON_OPTIONS removed: listening on every address",
             (), sendmail.all_addresses, mta="sendmail"),
)}
DEFAULT_SCENARIOS = {"postfix": "open-relay", "exim": "exim-relay-nets", "sendmail": "sendmail-promiscuous"}


def scenarios_of(mta: str) -> list[str]:
    """Every scenario of `mta`, in definition order."""
    return [s.name for s in SCENARIOS.values() if s.mta == mta]


def scenario_files(name: str, fqdn: str, stock: Path = Path("/")) -> dict[str, str]:
    """The files of scenario `name` for a host called `fqdn`, its MTA's packaged files read under `stock`.
    KeyError if unknown."""
    return SCENARIOS[name].files(fqdn, stock)
