#!/usr/bin/env python3
"""One relay check from here: does the SMTP server accept one foreign recipient? (EHLO, MAIL, RCPT, RSET,
QUIT; never DATA.)

    python3 bench/relaycheck.py ADDRESS [ADDRESS ...]

Exit 0 when every server refused the foreign recipient, 1 when one accepted it (an open relay), 2 when one
could not be asked. The Ansible playbook's check from the controller, the floor's SMTP probe and the
benchmark's reset check are this function.
"""

from __future__ import annotations

import smtplib
import sys

PROBE_SENDER = "bench@bench.example"
PROBE_RECIPIENT = "relaytest@relaytest.example.net"   # a foreign domain: accepting it means relaying


def relay_open(address: str, port: int = 25, timeout: float = 15.0) -> bool:
    """True when the server at address accepts a foreign recipient from here.

    Raises OSError / smtplib.SMTPException when it cannot be asked (no connection, no greeting)."""
    with smtplib.SMTP(address, port, local_hostname="bench.example", timeout=timeout) as smtp:
        smtp.ehlo()
        code, _ = smtp.mail(PROBE_SENDER)
        if code != 250:
            return False
        code, _ = smtp.rcpt(PROBE_RECIPIENT)
        smtp.rset()
        return code == 250


def main(addresses: list[str]) -> int:
    worst = 0
    for address in addresses:
        try:
            is_open = relay_open(address)
        except (OSError, smtplib.SMTPException) as exc:
            print(f"{address}: not asked: {exc}")
            worst = 2
            continue
        print(f"{address}: {'OPEN RELAY' if is_open else 'relay refused'}")
        worst = max(worst, int(is_open))
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
