"""Hostile SMTP peers (issue #11): garbage, a multi-megabyte line, a server that never answers, one byte per
second, a drop mid-reply, a TLS handshake that stalls. Each ends the probe `inconclusive` (never secure)
within a small multiple of its per-read timeout, with its memory bounded, and nothing ever queued."""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile_smtp import Behaviour, HostileSmtp  # noqa: E402

from remediate.model import Status  # noqa: E402
from remediate.probe import probe  # noqa: E402
from remediate.verdict import judge  # noqa: E402

TIMEOUT = 1.0          # seconds: the probe's per-read timeout in these tests
#: the whole probe may open a session, retry it once, and try STARTTLS: a few timeouts, never more
BOUND = 4 * TIMEOUT + 1.0
MEMORY = 1 << 20       # bytes the probe may allocate at its peak, whatever the peer sends


class GarbageReplies(Behaviour):
    """Greets properly, then answers MAIL with binary noise that is not an SMTP reply."""

    def mail(self, conv: object, address: str) -> str:
        return "\x00\x1b[2J\ufffd HTTP/1.1 200 OK \x7f"


CASES = {
    "garbage banner (binary, not SMTP)": Behaviour(raw_banner=b"\xff\xfe\x00garbage\x80\x81\r\n" * 50),
    "garbage reply to MAIL": GarbageReplies(),
    "multi-megabyte banner line (5 MB, no line end)": Behaviour(raw_banner=b"220 " + b"x" * 5_000_000),
    "multi-megabyte reply line (3 MB)": Behaviour(raw_replies={"MAIL": b"250 " + b"x" * 3_000_000 + b"\r\n"}),
    "server that never answers": Behaviour(silent=True),
    "one byte per second (banner)": Behaviour(trickle=1.0),
    "one byte per second (every reply after the banner)": Behaviour(reply_trickle=1.0),
    "drop mid-reply (half of the reply to MAIL)": Behaviour(drop_mid_reply="MAIL"),
    "drop mid-reply (half of the EHLO reply)": Behaviour(drop_mid_reply="EHLO"),
    "TLS handshake that stalls after STARTTLS": Behaviour(stall_tls=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_peer_ends_inconclusive_in_bounded_time_and_memory(case, reliability):
    with HostileSmtp(CASES[case]) as server:
        tracemalloc.start()
        started = time.monotonic()
        try:
            result = probe(*server.address, timeout=TIMEOUT, local_domain="example.org")
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        verbs = server.transcript.verbs()
    verdict = judge(result)
    assert verdict.status is Status.INCONCLUSIVE, (verdict.status, verdict.reasons)
    assert result.errors, "the reason it could not finish must be said"
    assert elapsed < BOUND, f"{elapsed:.1f}s"
    assert peak < MEMORY, f"{peak} bytes"
    assert "DATA" not in verbs and "BDAT" not in verbs
    reliability("hostile input", f"SMTP peer: {case}", f"inconclusive: {result.errors[0][:80]}",
                f"probe ended; peak {peak // 1024} KiB allocated; no DATA sent", elapsed)
