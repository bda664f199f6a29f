"""Starting states of Exim lab hosts: the files each scenario writes over Debian's exim4-config.

`stock` is the unpacked layer (Debian's own template and conf.d); each scenario returns {path: text}
for the host's private filesystem. Every host gets what the maintainer scripts and debconf would have
written: update-exim4.conf.conf for an "internet site" listening on all addresses, /etc/aliases with
root's mail going to a user, and (lab only, mail-domain.md section 9) higher limits on non-mail commands
and syntax errors so nmap's smtp-open-relay can finish as an oracle; they grant no relay right.
"""

from __future__ import annotations

from pathlib import Path

UPDATE_CONF = """\
# /etc/exim4/update-exim4.conf.conf
#
# Edit this file and /etc/mailname by hand and execute update-exim4.conf
# yourself or use 'dpkg-reconfigure exim4-config'
#
# Please note that this is _not_ a dpkg-conffile and that automatic changes
# to this file might happen. The code handling this will honor your local
# changes, so this is usually fine, but will break local schemes that mess
# around with multiple versions of the file.
#
# This is a Debian specific file

dc_eximconfig_configtype='{configtype}'
dc_other_hostnames='{fqdn}'
dc_local_interfaces=''
dc_readhost=''
dc_relay_domains=''
dc_minimaldns='false'
dc_relay_nets='{relay_nets}'
dc_smarthost='{smarthost}'
CFILEMODE='644'
dc_use_split_config='{split}'
dc_hide_mailname=''
dc_mailname_in_oh='true'
dc_localdelivery='mail_spool'
"""
LOCALMACROS = """\
# lab only: let nmap's smtp-open-relay finish its 16 tests in one session (mail-domain.md section 9)
smtp_accept_max_nonmail = 1000
smtp_max_synprot_errors = 1000
"""
ALIASES = "postmaster: root\nroot: ops\n"
RCPT_ACL = "/etc/exim4/conf.d/acl/30_exim4-config_check_rcpt"
RELAY_GATE = "  require\n    message = relay not permitted\n    domains = +local_domains : +relay_to_domains\n"
ANONYMOUS_AUTH = """
# added by a hurried admin: "let the scanner log in"
anon_server:
  driver = plaintext
  public_name = ANONYMOUS
  server_prompts = :
  server_condition = yes
  server_set_id = anonymous
"""
HAND_WRITTEN = """\
# /etc/exim4/exim4.conf: hand-written; it shadows the Debian-generated configuration
primary_hostname = {fqdn}
domainlist local_domains = @ : localhost : {fqdn}
domainlist relay_to_domains =
hostlist relay_from_hosts = 0.0.0.0/0
acl_smtp_rcpt = acl_check_rcpt
never_users = root
host_lookup = *
smtp_accept_max_nonmail = 1000
smtp_max_synprot_errors = 1000

begin acl

acl_check_rcpt:
  accept  hosts = :
  accept  hosts = +relay_from_hosts
  accept  authenticated = *
  require message = relay not permitted
          domains = +local_domains : +relay_to_domains
  require verify = recipient
  accept

begin routers

system_aliases:
  driver = redirect
  allow_fail
  allow_defer
  data = ${{lookup{{$local_part}}lsearch{{/etc/aliases}}}}
  file_transport = address_file

local_user:
  driver = accept
  check_local_user
  transport = local_delivery

begin transports

local_delivery:
  driver = appendfile
  file = /var/mail/$local_part_data
  delivery_date_add
  envelope_to_add
  return_path_add
  group = mail
  mode = 0660

address_file:
  driver = appendfile
  delivery_date_add
  envelope_to_add
  return_path_add

begin retry
*                      *           F,2h,15m; G,16h,1h,1.5; F,4d,6h
"""


def _base(fqdn: str, relay_nets: str = "", split: bool = False, configtype: str = "internet",
          smarthost: str = "") -> dict[str, str]:
    # the split configuration reads its local macros from conf.d/main/000_localmacros (README.Debian)
    macros = "/etc/exim4/conf.d/main/000_localmacros" if split else "/etc/exim4/exim4.conf.localmacros"
    return {"/etc/exim4/update-exim4.conf.conf": UPDATE_CONF.format(
                fqdn=fqdn, relay_nets=relay_nets, split="true" if split else "false", configtype=configtype,
                smarthost=smarthost),
            macros: LOCALMACROS, "/etc/aliases": ALIASES}


def secure(fqdn: str, stock: Path) -> dict[str, str]:
    return _base(fqdn)


def relay_nets(fqdn: str, stock: Path) -> dict[str, str]:
    return _base(fqdn, relay_nets="0.0.0.0/0")


def anonymous(fqdn: str, stock: Path) -> dict[str, str]:
    template = (stock / "etc/exim4/exim4.conf.template").read_text()
    marker = "begin authenticators\n"
    return {**_base(fqdn), "/etc/exim4/exim4.conf.template": template.replace(marker, marker + ANONYMOUS_AUTH, 1)}


def shadowing(fqdn: str, stock: Path) -> dict[str, str]:
    return {**_base(fqdn), "/etc/exim4/exim4.conf": HAND_WRITTEN.format(fqdn=fqdn)}


def split_gate_removed(fqdn: str, stock: Path) -> dict[str, str]:
    """Split configuration whose RCPT ACL lost its relay gate. As a smarthost system (mail for other
    domains goes to a smarthost given by address, so `verify = recipient` needs no DNS), only recipient
    verification is left between an outsider and relay: every foreign recipient verifies, so it relays."""
    acl = (stock / RCPT_ACL.lstrip("/")).read_text()
    assert RELAY_GATE in acl, "Debian's relay gate moved; update the scenario"
    return {**_base(fqdn, split=True, configtype="smarthost", smarthost="192.0.2.25"),
            RCPT_ACL: acl.replace(RELAY_GATE, "", 1)}


def relay_from_hosts_unused(fqdn: str, stock: Path) -> dict[str, str]:
    """relay_from_hosts narrowed (dc_relay_nets), but the ACL accepts by a literal wide host list instead."""
    template = (stock / "etc/exim4/exim4.conf.template").read_text()
    old = "  accept\n    hosts = +relay_from_hosts\n"
    assert old in template, "Debian's relay_from_hosts accept moved; update the scenario"
    return {**_base(fqdn, relay_nets="192.0.2.0/24"),
            "/etc/exim4/exim4.conf.template": template.replace(old, "  accept\n    hosts = 0.0.0.0/0\n", 1)}
