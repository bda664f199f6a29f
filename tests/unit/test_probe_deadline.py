"""The whole probe of a host must end in bounded time (issue #11), not only each read: a server that answers
every command just inside the read timeout keeps each read legal, and a probe runs some seventy commands
(nmap's 16 forms and ours, each MAIL, RCPT and RSET, the sessions it reopens, STARTTLS and AUTH sessions),
once per SMTP service of the host. `probe` has an overall deadline (`budget`, by default
`BUDGET_READS` read timeouts)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile_smtp import Behaviour, HostileSmtp  # noqa: E402

from remediate.model import Status  # noqa: E402
from remediate.probe import probe  # noqa: E402
from remediate.verdict import judge  # noqa: E402

TIMEOUT = 0.2    # seconds: the probe's per-read timeout here (10 s by default)
DELAY = 0.15     # every reply comes this late: inside the read timeout, so no read ever times out
#: a deadline for the whole probe, as a multiple of the read timeout (the fix chooses the number; 10 read
#: timeouts is 100 s at the default timeout, some twenty times what a healthy MTA needs)
BOUND = 10 * TIMEOUT


def test_a_server_that_answers_each_command_just_inside_the_timeout_cannot_keep_a_probe_going() -> None:
    with HostileSmtp(Behaviour(reply_delay=DELAY)) as server:
        started = time.monotonic()
        result = probe(*server.address, timeout=TIMEOUT, local_domain="example.org")
        elapsed = time.monotonic() - started
    assert elapsed < BOUND, f"the probe took {elapsed:.1f}s ({len(server.transcript.lines)} commands answered " \
                            f"{DELAY}s late each); a whole-probe deadline of {BOUND:.1f}s was expected"
    assert judge(result).status is Status.INCONCLUSIVE and any("deadline" in e for e in result.errors)
