"""The SMTP probe against a purpose-built hostile server, and the verdict rules."""

from __future__ import annotations

import datetime
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile_smtp import (  # noqa: E402
    AuthRequired,
    Behaviour,
    ConfigError451,
    Conversation,
    DebianDefer,
    Drop421Once,
    EximDefault,
    Greylister,
    HostileSmtp,
    OpenRelay,
    PostfixXclient,
    RecipientWhitelist,
    SenderWhitelist,
    serve_pair,
)

from remediate.errors import ProbeDropped, ProbeProtocolError, ProbeTimeout  # noqa: E402
from remediate.model import Status  # noqa: E402
from remediate.probe import probe, relay_forms, simulate  # noqa: E402
from remediate.smtp import ProbeResult, RelayAttempt, Reply, SmtpSession, parse_ehlo  # noqa: E402
from remediate.verdict import judge  # noqa: E402

FAST = 0.5  # seconds: the timeout used against servers that are meant to hang


def run(behaviour: Behaviour, **kwargs: object) -> tuple[ProbeResult, HostileSmtp]:
    kwargs.setdefault("timeout", 2.0)
    with HostileSmtp(behaviour) as server:
        result = probe(*server.address, **kwargs)  # type: ignore[arg-type]
    return result, server


def assert_never_queued(server_verbs: list[str]) -> None:
    assert "DATA" not in server_verbs and "BDAT" not in server_verbs


def reply(code: int, text: str = "x") -> Reply:
    return Reply(code, (text,))


def attempt(mail: int | None = 250, rcpt: int | None = 554, *, dropped: bool = False, form: int = 2,
            rcpt_text: str = "x", to: str = "relaytest@relaytest.example.net") -> RelayAttempt:
    return RelayAttempt("antispam@relaytest.example.net", to, None if mail is None else reply(mail),
                        None if rcpt is None else reply(rcpt, rcpt_text), dropped, form)


# --- replies and the session guards ------------------------------------------------------------------


def test_reply_exposes_class_and_enhanced_code() -> None:
    assert Reply(454, ("4.7.1 <a@b>: Relay access denied",)).enhanced == "4.7.1"
    assert Reply(454, ("4.7.1 <a@b>: Relay access denied",)).klass == 4
    assert Reply(550, ("relay not permitted",)).enhanced is None
    assert Reply(250, ("4.7.1 mismatched class",)).enhanced is None
    assert Reply(250, ("a", "b")).text == "a\nb"


def test_session_refuses_data_bdat_and_line_breaks() -> None:
    client, other = socket.socketpair()
    with client, other:
        session = SmtpSession(client, timeout=FAST)
        for line in ("DATA", "data", "BDAT 10 LAST", "MAIL FROM:<a@b>\r\nDATA", ""):
            with pytest.raises(ValueError):
                session.command(line)
        other.settimeout(0.05)
        with pytest.raises(TimeoutError):
            other.recv(1)  # nothing at all reached the wire


def test_session_reads_multiline_replies_and_detects_eof_and_garbage() -> None:
    client, other = socket.socketpair()
    with client, other:
        session = SmtpSession(client, timeout=FAST)
        other.sendall(b"250-mx.example.org\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\nHTTP/1.1 400 Bad\r\n")
        assert session.read_reply() == Reply(250, ("mx.example.org", "AUTH PLAIN", "8BITMIME"))
        with pytest.raises(ProbeProtocolError):
            session.read_reply()
        other.close()
        with pytest.raises(ProbeDropped):
            session.read_reply()


def test_a_trickling_server_cannot_stretch_a_read_past_the_timeout() -> None:
    with HostileSmtp(Behaviour(trickle=0.05)) as server:  # ~2.5 s for the whole banner
        session = SmtpSession(socket.create_connection(server.address), timeout=FAST)
        started = time.monotonic()
        with pytest.raises(ProbeTimeout):
            session.read_reply()
        assert time.monotonic() - started < FAST + 0.3
        session.quit()


def test_parse_ehlo_finds_mechanisms_plain_and_legacy_spelling() -> None:
    caps = parse_ehlo(Reply(250, ("mx.example.org Hello", "AUTH plain LOGIN", "AUTH=LOGIN ANONYMOUS",
                                  "STARTTLS", "XCLIENT NAME ADDR")))
    assert caps.auth == ("PLAIN", "LOGIN", "ANONYMOUS")
    assert caps.starttls and caps.xclient and caps.name == "mx.example.org"


def test_relay_forms_match_nmap_and_drop_ip_forms_when_simulating() -> None:
    forms = relay_forms("d.example", "mx.srv", "192.0.2.1")
    assert [n for n, *_ in forms] == list(range(1, 17))
    assert forms[0] == (1, "", "relaytest@d.example")
    assert forms[9] == (10, "antispam@[192.0.2.1]", '"relaytest@d.example"@[192.0.2.1]')
    assert forms[11] == (12, "antispam@[192.0.2.1]", "@[192.0.2.1]:relaytest@d.example")
    assert forms[15] == (16, "antispam@[192.0.2.1]", "d.example!relaytest@mx.srv")
    assert relay_forms("d.example", "mx", "2001:db8::1")[3][1] == "antispam@[IPv6:2001:db8::1]"
    simulated = relay_forms("d.example", "mx.srv", None)
    assert [n for n, *_ in simulated] == [1, 2, 3, 6, 7, 8, 11, 13, 14, 16]
    assert all("[" not in mail + rcpt for _, mail, rcpt in simulated)


def test_probe_rejects_names_that_could_inject_commands() -> None:
    with pytest.raises(ValueError):
        probe("127.0.0.1", 1, probe_domain="evil.example\r\nDATA")


# --- probe against hostile servers -------------------------------------------------------------------


def test_open_relay_is_vulnerable_on_all_16_forms_and_nothing_is_queued() -> None:
    result, server = run(OpenRelay(), local_domain="example.org")
    verdict = judge(result)
    assert verdict.status == Status.VULNERABLE and verdict.codes == ("open_relay",)
    # nmap's 16, then ours: a sender in the host's own domain, postmaster@ and abuse@ the foreign domain
    assert [a.form for a in result.relay_attempts] == [*range(1, 17), 17, 18, 19]
    assert all(a.accepted for a in result.relay_attempts)
    assert "19 of 19" in verdict.reasons[0]
    assert server.transcript.matching("MAIL FROM:<antispam@example.org>")
    assert server.transcript.matching("RCPT TO:<postmaster@relaytest.example.net>")
    assert server.transcript.matching("RCPT TO:<abuse@relaytest.example.net>")
    verbs = server.transcript.verbs()
    assert_never_queued(verbs)
    assert verbs.count("RSET") >= 17 and verbs[-1] == "QUIT"
    assert result.source_address == "127.0.0.1"
    assert server.transcript.matching("MAIL FROM:<antispam@[127.0.0.1]>")


def test_debian_defer_is_inconclusive_unless_the_config_is_known_to_defer() -> None:
    result, server = run(DebianDefer(), local_domain="example.org")
    assert_never_queued(server.transcript.verbs())
    assert judge(result).status == Status.INCONCLUSIVE
    verdict = judge(result, deferral="defer_unauth_destination")
    assert verdict.status == Status.SECURE and verdict.local_ok is True
    assert any("defer_unauth_destination" in r for r in verdict.reasons)


def test_554_refuser_is_secure_and_local_mail_still_flows() -> None:
    result, server = run(Behaviour(), local_domain="example.org")
    verdict = judge(result)
    assert verdict.status == Status.SECURE, verdict.reasons
    assert verdict.codes == () and verdict.local_ok is True
    assert server.transcript.matching("RCPT TO:<postmaster@example.org>")
    assert_never_queued(server.transcript.verbs())


def test_local_refusal_is_a_finding_of_its_own_and_auth_all_policy_wants_it() -> None:
    # relay refused everywhere, mail for the host's own domain refused too: secure (nothing relays), with an
    # inbound_refused finding; whether that is a regression is the caller's comparison with the baseline
    result, _ = run(Behaviour(local_domains=()), local_domain="example.org")
    verdict = judge(result)
    assert verdict.status == Status.SECURE and verdict.local_ok is False
    assert verdict.codes == ("inbound_refused",)
    assert "inbound mail for example.org (from outside, unauthenticated) is refused" in " ".join(verdict.reasons)
    assert judge(result, expect_local="refuse").status == Status.SECURE
    accepting, _ = run(Behaviour(), local_domain="example.org")
    assert judge(accepting, expect_local="refuse").local_ok is False
    assert judge(accepting, expect_local="refuse").status == Status.INCONCLUSIVE


def test_a_sender_forged_in_the_hosts_own_domain_is_tried_and_its_relay_found() -> None:
    # nmap's forms use the probe's own sender domain and miss this; form 17 claims the host's domain
    result, server = run(SenderWhitelist(), local_domain="mx.example.org", own_domains=["example.org"])
    verdict = judge(result)
    assert verdict.status == Status.VULNERABLE and "open_relay" in verdict.codes
    assert [a.form for a in result.relay_attempts if a.accepted] == [17]
    assert "form 17 (sender in a domain the host serves)" in verdict.reasons[0]
    assert "inbound_refused" in verdict.codes  # never an MX: its own mail is refused too
    assert_never_queued(server.transcript.verbs())


def test_role_recipients_at_a_foreign_domain_are_tried() -> None:
    result, _ = run(RecipientWhitelist(), local_domain="example.org")
    verdict = judge(result)
    assert verdict.status == Status.VULNERABLE and verdict.codes == ("open_relay",)
    assert [a.form for a in result.relay_attempts if a.accepted] == [18, 19]
    assert "postmaster@ a foreign domain; abuse@ a foreign domain" in verdict.reasons[0]


def test_a_service_that_dies_after_its_greeting_is_broken_not_secure() -> None:
    result, _ = run(Behaviour(drop_after_banner=True), local_domain="example.org")
    verdict = judge(result)
    assert verdict.status == Status.INCONCLUSIVE and verdict.codes == ("service_broken",)


def test_a_port_that_takes_connections_and_never_greets_is_broken_not_unreachable() -> None:
    result, _ = run(Behaviour(banner=(), drop_after_banner=True))
    assert result.connected and result.banner is None
    verdict = judge(result)
    assert verdict.status == Status.INCONCLUSIVE and verdict.codes == ("service_broken",)
    closed = probe("127.0.0.1", 1, timeout=1.0)   # nothing listens: unreachable, not broken
    assert not closed.connected and judge(closed).codes == ()


def test_a_temporary_refusal_of_inbound_mail_is_inbound_tempfail() -> None:
    result, _ = run(Greylister(), local_domain="example.org")
    verdict = judge(result, deferral="defer_unauth_destination")
    assert "inbound_tempfail" in verdict.codes and verdict.local_ok is False


def test_auth_required_at_mail_counts_as_refused() -> None:
    result, _ = run(AuthRequired())
    assert judge(result).status == Status.SECURE


def test_exim_drops_after_three_syntax_errors_and_the_probe_reconnects_through_all_forms() -> None:
    result, server = run(EximDefault())
    assert [a.form for a in result.relay_attempts] == [*range(1, 17), 18, 19]  # no own domain: no form 17
    assert not any(a.dropped for a in result.relay_attempts)
    assert server.accepted >= 4 and result.reconnects >= 3 and result.errors == ()
    assert server.transcript.matching("MAIL FROM:<antispam@mx.exim.test>")  # SRV from the banner
    verdict = judge(result)
    assert verdict.status == Status.SECURE, verdict.reasons
    assert_never_queued(server.transcript.verbs())


def test_421_mid_run_reconnects_and_retries_the_form() -> None:
    result, server = run(Drop421Once())
    assert len(result.relay_attempts) == 18 and server.accepted >= 2
    assert not any(a.dropped for a in result.relay_attempts)
    assert judge(result).status == Status.SECURE


def test_greylisting_and_config_errors_are_inconclusive_never_secure() -> None:
    for behaviour in (Greylister(), ConfigError451()):
        result, _ = run(behaviour, local_domain="example.org")
        verdict = judge(result, deferral="defer_unauth_destination")
        assert verdict.status == Status.INCONCLUSIVE, verdict.reasons
        assert any("proves nothing" in r for r in verdict.reasons)


def test_anonymous_two_step_is_found_and_tried_in_a_fresh_session() -> None:
    behaviour = Behaviour(auth=("PLAIN", "LOGIN", "ANONYMOUS"))
    result, server = run(behaviour)
    verdict = judge(result)
    assert verdict.status == Status.VULNERABLE and verdict.codes == ("anonymous_auth",)
    assert result.anonymous_attempt is not None and result.anonymous_attempt.code == 235
    assert "accepted" in verdict.reasons[0]
    assert behaviour.traces == ["probe@probe.remediate.example"]
    assert "AUTH ANONYMOUS" in server.transcript.matching("AUTH")
    assert result.anonymous_relay is not None and not result.anonymous_relay.accepted
    assert_never_queued(server.transcript.verbs())


def test_anonymous_advertised_but_refused_is_still_the_nessus_finding() -> None:
    result, _ = run(Behaviour(auth=("ANONYMOUS",), anonymous_reply="535 5.7.8 Error: authentication failed"))
    verdict = judge(result)
    assert verdict.codes == ("anonymous_auth",) and "refused" in verdict.reasons[0]


@pytest.mark.parametrize("behaviour", [Behaviour(drop_after_banner=True), Behaviour(silent=True)],
                         ids=["drops-after-banner", "never-answers"])
def test_dead_servers_are_inconclusive(behaviour: Behaviour) -> None:
    started = time.monotonic()
    result, _ = run(behaviour, timeout=FAST, local_domain="example.org")
    assert time.monotonic() - started < 4 * FAST + 1
    verdict = judge(result)
    assert verdict.status == Status.INCONCLUSIVE and result.errors
    assert result.relay_attempts == ()


@pytest.mark.parametrize("held", [1, 2])
def test_a_connection_held_in_the_listen_queue_does_not_stall_the_probe(held: int) -> None:
    # the server greets one of the probe's first two connections only after another one was served (a Postfix
    # master counting an old smtpd idle after a reload): the probe goes on with whichever session greeted first,
    # so it never waits for the held one (which, waited on first, would hold the probe for the server's 4 s)
    started = time.monotonic()
    result, server = run(Behaviour(hold=held, hold_seconds=4.0), timeout=6.0)
    assert time.monotonic() - started < 3.0
    assert result.errors == ()
    assert len(result.relay_attempts) == 16 + 2 and not any(a.dropped for a in result.relay_attempts)
    assert judge(result).status is Status.SECURE
    assert server.accepted >= 2


def test_a_near_server_gets_two_connections_at_once_and_a_far_one_five(server_tls: ssl.SSLContext,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # concurrency saves round trips; on a server that answers a connect within milliseconds each extra
    # connection only costs it a process: the probe keeps to two there, five where round trips cost more
    # ("near" is 5 ms; here 300 ms, so that a loaded machine's slow loopback connect still counts as near)
    from remediate import probe as probe_module
    from remediate.smtp import default_connect

    monkeypatch.setattr(probe_module, "_NEAR", 0.3)

    opening = {"now": 0, "most": 0}
    guard = threading.Lock()

    def far(address: str, port: int, timeout: float) -> socket.socket:
        with guard:
            opening["now"] += 1
            opening["most"] = max(opening["most"], opening["now"])
        time.sleep(0.35)   # a round trip longer than "near"
        try:
            return default_connect(None)(address, port, timeout)
        finally:
            with guard:
                opening["now"] -= 1

    near_server, far_server = (OpenRelay(tls=server_tls, auth=("PLAIN", "ANONYMOUS")) for _ in range(2))
    near, _ = run(near_server, local_domain="example.org")
    remote, _ = run(far_server, local_domain="example.org", connect=far)
    # (the server counts a connection until its own thread has closed it: one more than the probe had open)
    assert near_server.peak <= 3 and opening["most"] >= 3   # (3: more than near's 2 opening at once)
    assert outcome(near) == outcome(remote) and near.errors == remote.errors == ()


def test_connection_refused_is_inconclusive() -> None:
    port = socket.create_server(("127.0.0.1", 0))
    address = port.getsockname()
    port.close()
    result = probe(*address, timeout=FAST)
    verdict = judge(result)
    assert verdict.status == Status.INCONCLUSIVE
    assert any("cannot connect" in r for r in verdict.reasons)


class AlwaysShuttingDown(Behaviour):
    def mail(self, conv: object, address: str) -> str:
        conv.closing = True  # type: ignore[attr-defined]
        return "421 4.3.2 Service shutting down"


def test_a_server_that_keeps_dropping_stops_the_run_with_an_error() -> None:
    result, server = run(AlwaysShuttingDown(), local_domain="example.org")
    assert len(result.relay_attempts) < 16 and all(a.dropped for a in result.relay_attempts)
    assert server.accepted <= 4
    assert any("giving up" in e for e in result.errors)
    verdict = judge(result)
    assert verdict.status == Status.INCONCLUSIVE and verdict.local_ok is False


class ChannelLike:
    """What a paramiko Channel offers: no getsockname/getpeername, and not a socket (so no TLS)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, n: int) -> bytes:
        return self.sock.recv(n)

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()


def test_injected_streams_are_used_for_every_session(server_tls: ssl.SSLContext) -> None:
    opened: list[tuple[str, int]] = []

    def connect(address: str, port: int, timeout: float) -> ChannelLike:
        opened.append((address, port))
        return ChannelLike(socket.create_connection((address, port), timeout))

    result, server = run(Behaviour(tls=server_tls), connect=connect, source_address="198.51.100.7")
    # 18 attempts (nmap's 16 + postmaster@ and abuse@ foreign): the first group (one test per sender: 4), then
    # 14 in sessions of at most 6 = 4 relay sessions, + the STARTTLS one
    assert len(opened) == server.accepted == 5
    assert result.source_address == "198.51.100.7"  # the stream cannot say, so the requested one
    assert any("cannot carry TLS" in e for e in result.errors)
    assert judge(result).status == Status.INCONCLUSIVE


def test_multiline_banner_is_read_whole_and_srv_comes_from_its_first_line() -> None:
    banner = ("220-mx.multi.test ESMTP ready", "220-no UCE", "220 really")
    result, server = run(Behaviour(banner=banner))
    assert result.banner == Reply(220, ("mx.multi.test ESMTP ready", "no UCE", "really"))
    assert server.transcript.matching("MAIL FROM:<antispam@mx.multi.test>")
    assert judge(result).status == Status.SECURE


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.hostile.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


def test_anonymous_only_after_starttls_is_found(server_tls: ssl.SSLContext) -> None:
    behaviour = Behaviour(auth=("PLAIN",), auth_tls=("PLAIN", "ANONYMOUS"), tls=server_tls)
    result, server = run(behaviour)
    assert result.tls_offered and result.ehlo_auth == ("PLAIN",)
    assert result.tls_auth == ("PLAIN", "ANONYMOUS")
    verdict = judge(result)
    assert verdict.codes == ("anonymous_auth",) and "after STARTTLS" in verdict.reasons[0]
    assert result.anonymous_attempt is not None and result.anonymous_attempt.code == 235
    assert behaviour.traces == ["probe@probe.remediate.example"]
    assert_never_queued(server.transcript.verbs())


def test_starttls_without_anonymous_is_secure(server_tls: ssl.SSLContext) -> None:
    result, _ = run(Behaviour(auth=("PLAIN",), tls=server_tls))
    verdict = judge(result)
    assert result.tls_auth == ("PLAIN",) and verdict.status == Status.SECURE, verdict.reasons
    assert "or after STARTTLS" in " ".join(verdict.reasons)


def test_tls_failure_is_inconclusive() -> None:
    broken = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no certificate: every handshake fails
    result, _ = run(Behaviour(tls=broken))
    assert result.tls_offered and result.tls_auth is None
    assert judge(result).status == Status.INCONCLUSIVE


# --- simulate over a pipe-like stream ----------------------------------------------------------------


def test_simulate_poses_as_an_outside_client_via_xclient() -> None:
    stream, transcript, thread = serve_pair(PostfixXclient(auth=("PLAIN", "ANONYMOUS")))
    result = simulate(stream, local_domain="example.org", timeout=2.0)
    thread.join(2)
    assert transcript.matching("XCLIENT") == ["XCLIENT ADDR=203.0.113.9 NAME=[UNAVAILABLE]"]
    verbs = transcript.verbs()
    assert verbs.index("XCLIENT") < verbs.index("MAIL") < verbs.index("AUTH")  # relay tested before AUTH
    assert_never_queued(verbs)
    assert verbs[-1] == "QUIT" and verbs.count("EHLO") == 2
    assert [a.form for a in result.relay_attempts] == [1, 2, 3, 6, 7, 8, 11, 13, 14, 16, 17, 18, 19]
    assert transcript.matching("MAIL FROM:<antispam@example.org>")
    assert result.source_address == "203.0.113.9" and result.errors == ()
    verdict = judge(result)
    assert verdict.codes == ("anonymous_auth",) and verdict.local_ok is True


def test_simulate_without_xclient_does_not_trust_the_localhost_relay() -> None:
    refused = PostfixXclient(xclient_reply=lambda conv, arg: "550 5.7.0 Error: insufficient authorization")
    for behaviour in (refused, Behaviour(relay=lambda conv, address: "250 2.1.5 Ok")):
        stream, transcript, thread = serve_pair(behaviour)
        result = simulate(stream, timeout=2.0)
        thread.join(2)
        assert result.relay_attempts == () and result.errors
        assert judge(result).status == Status.INCONCLUSIVE
        assert "MAIL" not in transcript.verbs()


def test_simulate_drop_ends_with_an_error() -> None:
    stream, _, thread = serve_pair(Behaviour(drop_after_banner=True))
    result = simulate(stream, timeout=FAST)
    thread.join(2)
    assert result.errors and judge(result).status == Status.INCONCLUSIVE


# --- verdict rules on constructed results ------------------------------------------------------------

BANNER = Reply(220, ("mx.example.org ESMTP",))


def test_trusted_source_is_always_inconclusive_about_relay() -> None:
    # From inside mynetworks a refused relay proves nothing, and neither does an accepted one: the host
    # relays for its trusted networks by design (a correctly fixed host would "fail" verification).
    clean = ProbeResult("192.0.2.1", 25, BANNER, "10.0.0.5", relay_attempts=(attempt(),))
    verdict = judge(clean, orchestrator_trusted=True)
    assert verdict.status == Status.INCONCLUSIVE
    assert any(r.startswith("probe source 10.0.0.5 is in the host's trusted networks; relay results from "
                            "here prove nothing") for r in verdict.reasons)
    relay = ProbeResult("192.0.2.1", 25, BANNER, "10.0.0.5", relay_attempts=(attempt(rcpt=250),))
    judged = judge(relay, orchestrator_trusted=True)
    assert judged.status == Status.INCONCLUSIVE and "open_relay" not in judged.codes


def test_defer_counts_only_for_471_or_bare_454() -> None:
    def status(rcpt: int, text: str) -> Status:
        result = ProbeResult("h", 25, BANNER, relay_attempts=(attempt(rcpt=rcpt, rcpt_text=text),))
        return judge(result, deferral="defer_unauth_destination").status
    assert status(454, "4.7.1 <x>: Relay access denied") == Status.SECURE
    assert status(454, "Relay access denied") == Status.SECURE
    assert status(450, "4.7.1 <x>: Relay access denied") == Status.SECURE
    assert status(454, "4.7.0 TLS not available") == Status.INCONCLUSIVE
    assert status(451, "4.3.5 Server configuration error") == Status.INCONCLUSIVE


def test_every_mail_refused_means_nothing_was_tested() -> None:
    result = ProbeResult("h", 25, BANNER, relay_attempts=(attempt(mail=553, rcpt=None),))
    assert judge(result).status == Status.INCONCLUSIVE


def test_unknown_expect_local_is_an_error() -> None:
    with pytest.raises(ValueError):
        judge(ProbeResult("h", 25), expect_local="maybe")


codes = [220, 235, 250, 251, 334, 421, 450, 451, 454, 501, 530, 535, 550, 554]
replies = st.builds(Reply, st.sampled_from(codes),
                    st.sampled_from([("x",), ("4.7.1 x",), ("5.7.1 x",), ("4.3.5 x",)]))
attempts = st.builds(RelayAttempt, st.just("a@b"), st.just("c@d"), st.none() | replies, st.none() | replies,
                     st.booleans(), st.integers(1, 16))
results = st.builds(ProbeResult, st.just("h"), st.just(25), st.none() | replies,
                    st.none() | st.just("10.0.0.1"),
                    st.sampled_from([(), ("PLAIN",), ("ANONYMOUS",)]), st.booleans(),
                    st.none() | st.sampled_from([(), ("ANONYMOUS",)]), st.none() | replies,
                    st.lists(attempts, max_size=4).map(tuple), st.none() | attempts,
                    st.lists(st.just("boom"), max_size=1).map(tuple))


@settings(max_examples=300, deadline=None)
@given(results, st.booleans(), st.booleans(), st.sampled_from(["accept", "refuse"]))
def test_secure_needs_clean_evidence(result: ProbeResult, defer: bool, trusted: bool, local: str) -> None:
    verdict = judge(result, deferral="defer_unauth_destination" if defer else None, orchestrator_trusted=trusted,
                    expect_local=local)
    if verdict.status == Status.SECURE:
        assert result.banner is not None and not result.errors and not trusted
        assert result.relay_attempts and not any(a.dropped for a in result.relay_attempts)
        for a in result.relay_attempts:  # refused at MAIL, or refused (or deferred when allowed) at RCPT
            assert a.mail_reply is not None
            rcpt = a.rcpt_reply
            assert a.mail_reply.klass == 5 or (rcpt is not None and (rcpt.klass == 5 or defer))
        if verdict.local_ok is False:  # only as a health finding, never silently
            assert local == "accept" and {"inbound_refused", "inbound_tempfail"} & set(verdict.codes)
    assert (verdict.status == Status.VULNERABLE) == bool({"open_relay", "anonymous_auth"} & set(verdict.codes))


def test_other_services_fold_into_one_verdict_by_their_own_expectations() -> None:
    from remediate.verdict import merged

    mx = judge(ProbeResult("h", 25, BANNER, relay_attempts=(attempt(),), ehlo=BANNER,
                           local_attempt=attempt(rcpt=250, form=0, to="postmaster@example.org")))
    assert mx.status == Status.SECURE
    open_submission = judge(ProbeResult("h", 587, BANNER, relay_attempts=(attempt(),), ehlo=BANNER,
                                        local_attempt=attempt(rcpt=250, form=0, to="postmaster@example.org")))
    folded = merged(mx, "submission (port 587)", open_submission, submission=True)
    assert folded.status == Status.SECURE and folded.codes == ("submission_without_auth",)
    assert folded.findings[0].detail.startswith("submission (port 587): ")
    closed_submission = judge(ProbeResult("h", 587, BANNER, relay_attempts=(attempt(),), ehlo=BANNER,
                                          local_attempt=attempt(rcpt=554, form=0, to="postmaster@example.org")))
    assert merged(mx, "submission (port 587)", closed_submission, submission=True).codes == ()  # refusing is right
    assert merged(mx, "2525 (port 2525)", closed_submission, submission=False).codes == ("inbound_refused",)
    relaying = judge(ProbeResult("h", 465, BANNER, relay_attempts=(attempt(rcpt=250),), ehlo=BANNER))
    assert merged(mx, "smtps (port 465)", relaying, submission=True).status == Status.VULNERABLE


# --- pipelining (RFC 2920) and concurrent sessions -----------------------------------------------------


def outcome(result: ProbeResult) -> tuple[object, ...]:
    """What the verdict is made of, reply by reply (not the reply texts' order of arrival)."""
    def one(a: RelayAttempt | None) -> object:
        return a and (a.form, a.mail_from, a.rcpt_to, a.mail_reply and a.mail_reply.code,
                      a.rcpt_reply and a.rcpt_reply.code, a.dropped)
    verdict = judge(result)
    return (verdict.status, verdict.codes, verdict.local_ok, tuple(one(a) for a in result.relay_attempts),
            one(result.local_attempt), result.ehlo_auth, result.tls_auth,
            result.anonymous_attempt and result.anonymous_attempt.code, one(result.anonymous_relay),
            bool(result.errors))


class DropsEverySecondRcpt(Behaviour):
    """421 and close at the second RCPT of every connection: each test goes through on its retry."""

    def relay(self, conv: Conversation, address: str) -> str:
        if conv.rcpts == 2:
            conv.closing = True
            return "421 4.7.0 Error: too many errors"
        return super().relay(conv, address)


class RefusesLiterals(Behaviour):
    """Refuses MAIL from a domain literal (one error each; Exim's 501) and relay (554)."""

    def mail(self, conv: object, address: str) -> str:
        return f"501 <{address}>: domain literals not allowed" if "[" in address else "250 2.1.0 Ok"


PIPELINING_CASES: dict[str, tuple[type[Behaviour], dict[str, object]]] = {
    "open relay": (OpenRelay, {}),
    "closed relay": (Behaviour, {}),
    "sender whitelist": (SenderWhitelist, {}),
    "MAIL refused (530)": (AuthRequired, {}),
    "domain literals refused": (RefusesLiterals, {}),
    "Exim: farewell after 3 syntax errors": (EximDefault, {}),
    "drop mid-batch (3rd RCPT, no reply)": (Drop421Once, {"nth": 3, "drop": True}),
    "421 mid-batch (3rd RCPT)": (Drop421Once, {"nth": 3}),
    "421 at every second RCPT": (DropsEverySecondRcpt, {}),
    "anonymous AUTH": (Behaviour, {"auth": ("PLAIN", "ANONYMOUS")}),
}


@pytest.mark.parametrize("case", list(PIPELINING_CASES))
def test_pipelined_probe_gets_the_verdicts_of_the_sequential_one(case: str) -> None:
    kind, options = PIPELINING_CASES[case]
    pipelined, fast = run(kind(**options), local_domain="example.org", own_domains=["example.org"])
    sequential, slow = run(kind(pipelining=False, **options), local_domain="example.org",
                           own_domains=["example.org"])
    assert outcome(pipelined) == outcome(sequential)
    assert len(pipelined.relay_attempts) == 19 and not any(a.dropped for a in pipelined.relay_attempts)
    assert pipelined.errors == ()
    assert slow.transcript.unasked_pipelining == []   # without PIPELINING: one command at a time
    assert sum(fast.transcript.reads.values()) < sum(slow.transcript.reads.values()) / 2
    for server in (fast, slow):
        assert_never_queued(server.transcript.verbs())
        if kind in (OpenRelay, Behaviour, SenderWhitelist, AuthRequired):  # servers that never hang up first
            last = {number: line for number, line in server.transcript.lines}
            assert set(last.values()) == {"QUIT"}   # every session ended, every transaction with it


def test_a_pipelined_session_needs_two_round_trips_and_sessions_run_at_once(server_tls: ssl.SSLContext) -> None:
    started = time.monotonic()
    result, server = run(OpenRelay(tls=server_tls, auth=("PLAIN",)), local_domain="example.org")
    elapsed = time.monotonic() - started
    assert judge(result).codes == ("open_relay",) and len(result.relay_attempts) == 19
    reads = server.transcript.reads
    # relay sessions: EHLO, then one group (MAIL, RCPT, RSET per test, QUIT last); STARTTLS session: EHLO,
    # STARTTLS, EHLO, QUIT
    assert sorted(reads.values()) == [2, 2, 2, 2, 4], reads
    assert server.accepted == 5 and elapsed < 2.0
    lines = server.transcript.lines
    assert max(sum(1 for n, line in lines if n == c and line.startswith("MAIL")) for c in reads) <= 6


def test_a_sender_refused_at_mail_gets_no_rcpt_once_known_so_postfix_never_tarpits() -> None:
    # Postfix counts a 503 to a RCPT after a refused MAIL as an error and slows down from the tenth on: after the
    # first group (one test per sender) a refused sender's RCPT is left out, as the sequential dialogue does
    result, server = run(AuthRequired(), local_domain="example.org")
    assert judge(result).status == Status.SECURE
    rcpts = server.transcript.matching("RCPT")
    assert len(rcpts) <= 5   # the first group (one test per sender) and the sender in the host's own domain
    per_connection: dict[int, int] = {}
    for number, line in server.transcript.lines:
        if line.split(" ", 1)[0] in ("MAIL", "RCPT"):
            per_connection[number] = per_connection.get(number, 0) + 1
    assert max(per_connection.values()) < 10   # errors per session (each refused MAIL and 503 RCPT)


def test_a_drop_mid_batch_loses_no_test_and_retries_on_a_fresh_session() -> None:
    behaviour = Drop421Once(nth=3, drop=True)
    result, server = run(behaviour, local_domain="example.org")
    assert behaviour.hit   # the server did drop in the middle of a group
    assert [a.form for a in result.relay_attempts] == [*range(1, 18), 18, 19]
    assert not any(a.dropped for a in result.relay_attempts) and result.errors == ()
    assert result.reconnects == 4   # 4 relay sessions, and one more for the tests of the one that dropped
    assert judge(result).status == Status.SECURE


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_a_server_that_limits_each_clients_connections_gets_the_same_verdict(limit: int,
                                                                             server_tls: ssl.SSLContext) -> None:
    options = {"tls": server_tls, "auth": ("PLAIN", "ANONYMOUS"), "local_domain": "example.org"}
    alone, _ = run(OpenRelay(**{k: v for k, v in options.items() if k != "local_domain"}),
                   local_domain="example.org")
    limited, server = run(OpenRelay(max_sessions=limit, tls=server_tls, auth=("PLAIN", "ANONYMOUS")),
                          local_domain="example.org")
    assert outcome(limited) == outcome(alone) and limited.errors == ()
    assert limited.tls_auth == ("PLAIN", "ANONYMOUS") and limited.anonymous_attempt is not None


def test_send_group_allows_only_what_rfc_2920_allows() -> None:
    client, other = socket.socketpair()
    with client, other:
        session = SmtpSession(client, timeout=FAST)
        for group in (["MAIL FROM:<a@b>", "DATA"], ["EHLO x", "MAIL FROM:<a@b>"], ["QUIT", "RSET"],
                      ["MAIL FROM:<a@b>", "RCPT TO:<c@d>\r\nDATA"], []):
            with pytest.raises(ValueError):
                session.send_group(group)
        other.settimeout(0.05)
        with pytest.raises(TimeoutError):
            other.recv(1)  # nothing at all reached the wire
        session.send_group(["MAIL FROM:<a@b>", "RCPT TO:<c@d>", "RSET", "QUIT"])
        assert other.recv(4096) == b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRSET\r\nQUIT\r\n"  # one write


def test_probe_sockets_do_not_wait_for_nagle() -> None:
    from remediate.smtp import default_connect

    with HostileSmtp(Behaviour()) as server:
        sock = default_connect(None)(*server.address, FAST)
        assert isinstance(sock, socket.socket)
        with sock:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "sequential"])
def test_simulate_pipelines_when_offered_with_the_same_result(pipelining: bool) -> None:
    stream, transcript, thread = serve_pair(PostfixXclient(auth=("PLAIN", "ANONYMOUS"), pipelining=pipelining))
    result = simulate(stream, local_domain="example.org", timeout=2.0)
    thread.join(2)
    assert result.errors == () and [a.form for a in result.relay_attempts] == [1, 2, 3, 6, 7, 8, 11, 13, 14,
                                                                                16, 17, 18, 19]
    assert judge(result).codes == ("anonymous_auth",) and judge(result).local_ok is True
    assert_never_queued(transcript.verbs())
    assert transcript.verbs()[-1] == "QUIT"
    if pipelining:   # EHLO, XCLIENT, EHLO, first group, the rest, AUTH (two steps), form 2 with QUIT
        assert transcript.reads[1] <= 8, transcript.reads
    else:
        assert transcript.unasked_pipelining == [] and transcript.reads[1] > 40


def test_a_server_that_refuses_every_session_with_421_is_given_up_on_at_once() -> None:
    # a 421 right after a session ended may be a server still counting it (retried), but only a few times
    started = time.monotonic()
    result, _ = run(Behaviour(banner=("421 4.3.2 mx.hostile.test Service not available",)), timeout=2.0)
    assert time.monotonic() - started < 5
    assert result.errors and judge(result).status is not Status.SECURE
