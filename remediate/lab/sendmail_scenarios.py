"""Starting states of Sendmail lab hosts: the files each scenario writes over Debian's sendmail packages.

`stock` is the unpacked layer. Every host gets what sendmail's maintainer scripts write (/etc/mail/
sendmail.mc and submit.mc from Debian's templates, local-host-names, aliases) and, lab only, access-map
entries that exempt the lab's own 10.x addresses from the connection-rate limits (a probe reconnects more
often than Debian's `ClientRate` allows; mail-domain.md section 9). They grant no relay right.
Debian's mc binds the MTA to 127.0.0.1; an MX listens on its address, so every scenario but
`sendmail-all-addresses` binds it to 0.0.0.0 explicitly; that one removes both loopback-only DAEMON_OPTIONS.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATES = "usr/share/sendmail/cf/debian"
LOOPBACK = "DAEMON_OPTIONS(`Family=inet,  Name=MTA-v4, Port=smtp, Addr=127.0.0.1')dnl\n"
ALL = "DAEMON_OPTIONS(`Family=inet,  Name=MTA-v4, Port=smtp, Addr=0.0.0.0')dnl\n"
MSP = "DAEMON_OPTIONS(`Family=inet,  Name=MSP-v4, Port=submission, M=Ea, Addr=127.0.0.1')dnl\n"
ACCESS = """\
# /etc/mail/access (Debian's defaults, then the lab's exemptions)
Connect:localhost.localdomain\tRELAY
Connect:localhost\tRELAY
Connect:127.0.0.1\tRELAY
# lab only: the controller reconnects more often than ClientRate allows (grants no relay)
ClientRate:10\t0
ClientConn:10\t0
"""
AUTH = """\
dnl # SMTP AUTH, with anonymous logins for the old scanner
define(`confAUTH_MECHANISMS', `ANONYMOUS DIGEST-MD5 CRAM-MD5 PLAIN LOGIN')dnl
TRUST_AUTH_MECH(`ANONYMOUS DIGEST-MD5 CRAM-MD5 PLAIN LOGIN')dnl
"""
MAILERS = "MAILER_DEFINITIONS\n"


def _base(fqdn: str, stock: Path, mc_edit: tuple[str, str] = (LOOPBACK, ALL), access: str = "") -> dict[str, str]:
    mc = (stock / TEMPLATES / "sendmail.mc").read_text()
    assert mc_edit[0] in mc, "Debian's sendmail.mc changed; update the scenario"
    return {"/etc/mail/sendmail.mc": mc.replace(*mc_edit, 1),
            "/etc/mail/submit.mc": (stock / TEMPLATES / "submit.mc").read_text(),
            "/etc/mail/access": ACCESS + access, "/etc/mail/local-host-names": f"{fqdn}\nlocalhost\n",
            "/etc/mail/aliases": "postmaster: root\nroot: ops\n", "/etc/mail/relay-domains": ""}


def secure(fqdn: str, stock: Path) -> dict[str, str]:
    return _base(fqdn, stock)


def promiscuous(fqdn: str, stock: Path) -> dict[str, str]:
    return _base(fqdn, stock, (LOOPBACK, ALL + "FEATURE(`promiscuous_relay')dnl\n"))


def connect_octets(fqdn: str, stock: Path) -> dict[str, str]:
    return _base(fqdn, stock, access="# the office and the DMZ\nConnect:10\tRELAY\nConnect:172\tRELAY\n")


def to_relay(fqdn: str, stock: Path) -> dict[str, str]:
    return _base(fqdn, stock, access="# a partner we once relayed for\nTo:partner.example\tRELAY\n")


def anonymous(fqdn: str, stock: Path) -> dict[str, str]:
    files = _base(fqdn, stock)
    files["/etc/mail/sendmail.mc"] = files["/etc/mail/sendmail.mc"].replace(MAILERS, AUTH + MAILERS, 1)
    return files


def all_addresses(fqdn: str, stock: Path) -> dict[str, str]:
    """Both loopback-only DAEMON_OPTIONS removed: with none left, sendmail's default daemon listens on port 25
    of every address (one left alone would be the only daemon)."""
    files = _base(fqdn, stock, (LOOPBACK, ""))
    files["/etc/mail/sendmail.mc"] = files["/etc/mail/sendmail.mc"].replace(MSP, "", 1)
    return files
