"""Pure helpers of the engine: which networks trust the probe, which domains a host serves."""

from __future__ import annotations

from remediate.engine import Facts, in_networks, served_by


def facts(**outputs: str) -> Facts:
    return Facts({}, {}, outputs)


def test_in_networks_reads_postfix_mynetworks_syntax():
    assert in_networks("10.99.0.1", "127.0.0.0/8 [::1]/128, 10.99.0.0/24")
    assert in_networks("::1", "127.0.0.0/8 [::1]/128")
    assert not in_networks("10.99.0.1", "127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128")
    assert not in_networks("10.99.0.1", "hash:/etc/postfix/network_table")


def test_served_by_finds_the_probe_domain_in_mydestination_or_relay_domains():
    f = facts(mydestination="mx1.example.org, localhost", relay_domains="partner.example, hash:/etc/x")
    assert served_by("mx1.example.org", f) == "mydestination"
    assert served_by("sub.partner.example", f) == "relay_domains"
    assert served_by("relaytest.example.net", f) is None
    assert served_by("relaytest.example.net", None) is None
