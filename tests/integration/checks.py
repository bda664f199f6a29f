"""Outside checks the integration tests share: real SMTP clients, nmap, and file snapshots of a host."""

from __future__ import annotations

import base64
import hashlib
import smtplib
import ssl
import subprocess
from pathlib import Path

FOREIGN = "relaytest@example.net"


def rcpt(address: str, recipient: str, sender: str = "antispam@example.org") -> int:
    """RCPT TO `recipient` from this machine (the orchestrator's address); RSET, never DATA. `sender` ""
    is the null sender (what an MTA that checks sender domains in DNS takes without DNS)."""
    with smtplib.SMTP(address, 25, timeout=10) as smtp:
        smtp.ehlo("probe.test.example")
        smtp.mail(sender)
        code, _ = smtp.rcpt(recipient)
        smtp.rset()
        return code


def nmap_open_relay(*addresses: str) -> dict[str, bool]:
    """nmap's smtp-open-relay verdict for each address:25, in one nmap run (hosts scanned in parallel;
    a refusing Postfix tarpits nmap's 16 tests for ~18 s, so one run for all is much faster)."""
    out = subprocess.run(["nmap", "-Pn", "-p25", "--script", "smtp-open-relay", *addresses],
                         capture_output=True, text=True, timeout=300).stdout
    verdicts: dict[str, bool] = {}
    for block in out.split("Nmap scan report for ")[1:]:
        address = block.split()[0]
        assert "smtp-open-relay" in block, block
        verdicts[address] = "Server is an open relay" in block
    assert set(verdicts) == set(addresses), out
    return verdicts


def anonymous_advertised(address: str) -> bool:
    """ANONYMOUS in the EHLO AUTH list, in plaintext or after STARTTLS (what Nessus 54581 reads)."""
    seen = False
    for tls in (False, True):
        with smtplib.SMTP(address, 25, timeout=10) as smtp:
            smtp.ehlo("probe.test.example")
            if tls:
                if not smtp.has_extn("starttls"):
                    continue
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                smtp.starttls(context=ctx)
                smtp.ehlo("probe.test.example")
            seen |= "ANONYMOUS" in smtp.esmtp_features.get("auth", "").upper().split()
    return seen


def auth_anonymous_accepted(address: str) -> bool:
    with smtplib.SMTP(address, 25, timeout=10) as smtp:
        smtp.ehlo("probe.test.example")
        if smtp.docmd("AUTH", "ANONYMOUS")[0] != 334:
            return False
        return smtp.docmd(base64.b64encode(b"probe@test.example").decode())[0] == 235


def snapshot(root: Path, directory: str = "etc/postfix") -> dict[str, tuple[str, int, int, int, int]]:
    """{relative path: (sha256, mtime_ns, mode, uid, gid)} of every file under root/directory."""
    out = {}
    for path in sorted((root / directory).rglob("*")):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns,
                                                st.st_mode, st.st_uid, st.st_gid)
    return out


def master_pid(root: Path) -> str:
    return (root / "var/spool/postfix/pid/master.pid").read_text().strip()


def wrap_postfix(lab, host: str, on_reload: str) -> None:
    """Replace the host's `postfix` command with one that runs `on_reload` for the first `postfix reload`
    (the tool's own reload; the rollback's reload then works, as after a transient fault)."""
    lab.exec(host, ["mv", "/usr/sbin/postfix", "/usr/sbin/postfix.real"], check=True)
    script = ("#!/bin/sh\nif [ \"$1\" = reload ] && [ ! -e /run/sabotaged ]; then\ntouch /run/sabotaged\n"
              + on_reload + "\nfi\nexec /usr/sbin/postfix.real \"$@\"\n")
    lab.exec(host, ["sh", "-c", "cat > /usr/sbin/postfix && chmod 755 /usr/sbin/postfix"], input=script,
             check=True)
