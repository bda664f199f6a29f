"""Loading, validating, selecting and writing inventories."""

from __future__ import annotations

import ipaddress
import os
import textwrap
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediate.errors import ConfigError
from remediate.inventory import (
    HEADER,
    MTAS,
    POLICIES,
    Host,
    Inventory,
    load_inventory,
    make_host,
    select,
    write_inventory,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Inventory:
    return load_inventory(write(tmp_path, text))


def failure(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert caught.value.path == str(path)
    return caught.value


# --- resolution -------------------------------------------------------------------------------------------

def test_host_keys_beat_later_groups_beat_earlier_groups_beat_defaults_beat_built_ins(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        defaults:
          user: deploy
          port: 2200
          policy: auth-all
          mta: exim
        hosts:
          mx1: {address: 10.99.0.11}
          mx2: {address: 10.99.0.12, user: ops, become: true}
          mx3: {address: mail.example.org}
        groups:
          edge: {hosts: [mx1, mx2], vars: {port: 2201, mta: sendmail}}
          eu: {hosts: [mx2, mx1], vars: {port: 2202}}
        """)
    mx1, mx2, mx3 = inventory.hosts
    assert (mx1.connection.port, mx1.mta, mx1.connection.user, mx1.policy) == (2202, "sendmail", "deploy", "auth-all")
    assert mx1.connection.become is False
    assert (mx2.connection.port, mx2.connection.user, mx2.connection.become) == (2202, "ops", True)
    assert (mx3.connection.port, mx3.mta, mx3.groups) == (2200, "exim", ())
    assert mx1.groups == mx2.groups == ("edge", "eu")
    assert dict(inventory.groups) == {"edge": ("mx1", "mx2"), "eu": ("mx1", "mx2")}
    # untouched keys fall back to the built-in defaults
    assert mx3.trusted_networks == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert (mx3.probe_domain, mx3.probe_port, mx3.connection.connect_timeout) == ("relaytest.example.net", 25, 10.0)
    assert (mx3.connection.identity_file, mx3.mail_domain, mx3.connection.password_env) == (None, None, None)


def test_paths_expand_home_and_resolve_relative_to_the_inventory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/alice")
    inventory = load(tmp_path, """
        defaults: {identity_file: ~/.ssh/id_ed25519}
        hosts:
          mx1: {address: 10.0.0.1, known_hosts: keys/known_hosts}
          mx2: {address: 10.0.0.2, identity_file: null, ssh_config: null}
        """)
    mx1, mx2 = inventory.hosts
    assert mx1.connection.identity_file == "/home/alice/.ssh/id_ed25519"
    assert mx1.connection.known_hosts == str(tmp_path / "keys" / "known_hosts")
    assert mx1.connection.ssh_config == "/home/alice/.ssh/config"
    assert (mx2.connection.identity_file, mx2.connection.ssh_config) == (None, None)  # null overrides inherited
    assert mx2.connection.known_hosts == "/home/alice/.ssh/known_hosts"


def test_networks_are_held_as_ip_networks_whatever_the_notation(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        hosts:
          mx1:
            address: "2001:db8::25"
            trusted_networks: [10.0.0.0/8, 192.0.2.7, "[2001:DB8::]/32", "[::1]", "2001:db8:1::/48"]
        """)
    host = inventory.hosts[0]
    assert host.address == "2001:db8::25"
    assert host.trusted_networks == tuple(ipaddress.ip_network(n) for n in (
        "10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128", "2001:db8:1::/48"))
    assert host.trusts("10.1.2.3") and host.trusts("2001:db8::99") and not host.trusts("192.0.2.8")


def test_hosts_and_inventory_are_frozen(tmp_path: Path) -> None:
    inventory = load(tmp_path, "hosts: {mx1: {address: 10.0.0.1}, mx2: {address: 10.0.0.2}}\n"
                               "groups: {edge: {hosts: [mx1]}}\n")
    with pytest.raises(AttributeError):
        inventory.hosts[0].address = "10.0.0.9"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        inventory.hosts[0].connection.port = 2222  # type: ignore[misc]
    with pytest.raises(TypeError):
        inventory.groups["edge"] = ()  # type: ignore[index]


# --- errors name the file, line and key -------------------------------------------------------------------

MX1 = "hosts:\n  mx1:\n    address: 10.0.0.1\n"  # a valid host; lines 1-3
ONE = "hosts: {mx1: {address: 10.0.0.1}}\n"      # the same, on line 1

ERRORS = [
    (ONE + "hostz: {}\n", 2, "hostz", "did you mean `hosts`?"),
    (MX1 + "    becom: true\n", 4, "hosts.mx1.becom", "did you mean `become`?"),
    ("defaults:\n  prot: 22\n" + ONE, 2, "defaults.prot", "did you mean `port`?"),
    ("defaults:\n  address: 10.0.0.1\n" + ONE, 2, "defaults.address", "per host"),
    (ONE + "groups:\n  edge:\n    hosts: [mx1]\n    vars:\n      polcy: auth-all\n",
     6, "groups.edge.vars.polcy", "did you mean `policy`?"),
    (ONE + "groups:\n  edge: {members: [mx1]}\n", 3, "groups.edge.members", "unknown key"),
    (MX1 + "    port: '22'\n", 4, "hosts.mx1.port", "the string '22'"),
    (MX1 + "\n    port: 70000\n", 5, "hosts.mx1.port", "out of range"),
    (MX1 + "    become: yes\n", 4, "hosts.mx1.become", "expected true or false"),
    (MX1 + "    become: 1\n", 4, "hosts.mx1.become", "expected true or false"),
    ("hosts:\n  mx1:\n    address: 10.99.0.300\n", 3, "hosts.mx1.address", "neither an IP address"),
    ("hosts:\n  mx1:\n    address: bad_host!\n", 3, "hosts.mx1.address", "neither an IP address"),
    ("hosts:\n  mx1:\n    address: '[::1]'\n", 3, "hosts.mx1.address", "without brackets"),
    (MX1 + "    trusted_networks:\n      - 127.0.0.0/8\n      - 10.0.0.1/8\n",
     6, "hosts.mx1.trusted_networks[1]", "'10.0.0.1/8' has host bits set; did you mean '10.0.0.0/8'?"),
    (MX1 + "    trusted_networks: ['[2001:db8::1]/32']\n",
     4, "hosts.mx1.trusted_networks[0]", "did you mean '[2001:db8::]/32'?"),
    ("defaults:\n  trusted_networks: ['[10.0.0.0]/8']\n" + ONE, 2, "defaults.trusted_networks[0]", "bracketed IPv6"),
    ("defaults:\n  trusted_networks: [0.0.0.0/0]\n" + ONE, 2, "defaults.trusted_networks[0]", "open relay"),
    ("defaults:\n  trusted_networks: [10.0.0.0/33]\n" + ONE, 2, "defaults.trusted_networks[0]",
     "not a valid network"),
    ("defaults:\n  trusted_networks: 10.0.0.0/8\n" + ONE, 2, "defaults.trusted_networks", "expected a list"),
    (MX1 + "  -mx2: {address: 10.0.0.2}\n", 4, "hosts.-mx2", "not a valid name"),
    (ONE + "groups:\n  edge:\n    hosts:\n      - mx1\n      - mx9\n",
     6, "groups.edge.hosts[1]", "'mx9' is not a host"),
    (ONE + "groups:\n  edge: {hosts: [mx1, mx1]}\n", 3, "groups.edge.hosts[1]", "listed twice"),
    (ONE + "groups:\n  mx1: {hosts: [mx1]}\n", 3, "groups.mx1", "also a host name"),
    ("defaults: {port: 22}\nhosts: {}\n", 2, "hosts", "no hosts"),
    ("defaults: {port: 22}\n", None, "hosts", "no hosts"),
    ("hosts:\n  mx1:\n    port: 22\n", 2, "hosts.mx1", "missing address"),
    ("hosts:\n  mx1:\n", 2, "hosts.mx1", "missing address"),
    ("hosts:\n  mx1: [10.0.0.1]\n", 2, "hosts.mx1", "expected a mapping"),
    (MX1 + "    user: Root\n", 4, "hosts.mx1.user", "not a user name"),
    (MX1 + "    mta: qmail\n", 4, "hosts.mx1.mta", "one of auto, postfix"),
    (MX1 + "    policy: open\n", 4, "hosts.mx1.policy", "relay-auth"),
    (MX1 + "    connect_timeout: 0\n", 4, "hosts.mx1.connect_timeout", "positive number"),
    (MX1 + "    probe_domain: not a domain\n", 4, "hosts.mx1.probe_domain", "not a valid DNS domain"),
    (MX1 + "    probe_port: true\n", 4, "hosts.mx1.probe_port", "whole number"),
    (MX1 + "    port: 22\n    port: 2222\n", 5, "port", "duplicate key"),
    ("- mx1\n- mx2\n", 1, None, "expected a mapping"),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment"), ERRORS)
def test_each_error_names_file_line_and_key(tmp_path: Path, text: str, line: int | None, key: str | None,
                                            fragment: str) -> None:
    error = failure(tmp_path, text)
    assert (error.line, error.key) == (line, key)
    assert fragment in str(error)
    where = f"{tmp_path / 'inventory.yaml'}" + (f":{line}" if line else "") + (f": {key}: " if key else ": ")
    assert str(error).startswith(where)


def test_yaml_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    error = failure(tmp_path, "hosts:\n  mx1:\n    address: 10.0.0.1\n   port: 22\n")
    assert error.line == 4
    assert "invalid YAML" in str(error) and "column" in str(error)


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as caught:
        load_inventory(tmp_path / "nope.yaml")
    assert caught.value.path == str(tmp_path / "nope.yaml")


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    assert "empty" in str(failure(tmp_path, "# nothing yet\n"))


@pytest.mark.parametrize("key", ["password", "passphrase", "sudo_password", "secret", "become_pass"])
@pytest.mark.parametrize("section", ["defaults", "hosts.mx1", "groups.edge.vars"])
def test_passwords_are_refused_without_echoing_them(tmp_path: Path, key: str, section: str) -> None:
    body = {"defaults": f"defaults:\n  {key}: hunter2\nhosts: {{mx1: {{address: 10.0.0.1}}}}\n",
            "hosts.mx1": f"hosts:\n  mx1:\n    address: 10.0.0.1\n    {key}: hunter2\n",
            "groups.edge.vars": f"hosts: {{mx1: {{address: 10.0.0.1}}}}\ngroups:\n  edge:\n    vars:\n"
                                f"      {key}: hunter2\n"}[section]
    error = failure(tmp_path, body)
    assert error.key == f"{section}.{key}"
    assert error.line == body.splitlines().index(next(ln for ln in body.splitlines() if "hunter2" in ln)) + 1
    assert "passwords never live in the inventory; put it in an environment variable and name it with " \
           "password_env" in str(error)
    assert "hunter2" not in str(error)


def test_password_env_holds_a_name_and_a_pasted_secret_is_not_echoed(tmp_path: Path) -> None:
    assert load(tmp_path, "hosts: {mx1: {address: 10.0.0.1, password_env: MX1_SUDO}}\n"
                ).hosts[0].connection.password_env == "MX1_SUDO"
    error = failure(tmp_path, "hosts:\n  mx1:\n    address: 10.0.0.1\n    password_env: hunter2\n")
    assert (error.line, error.key) == (4, "hosts.mx1.password_env")
    assert "hunter2" not in str(error)


def test_duplicate_password_keys_do_not_leak_values(tmp_path: Path) -> None:
    error = failure(tmp_path, "hosts:\n  mx1:\n    password: hunter2\n    password: hunter3\n")
    assert "hunter" not in str(error)


# --- select -----------------------------------------------------------------------------------------------

FLEET = """
    hosts:
      mx1: {address: 10.0.0.1}
      mx2: {address: 10.0.0.2}
      relay-a: {address: 10.0.1.1}
      relay-b: {address: 10.0.1.2}
      backup: {address: 10.0.2.1}
    groups:
      edge: {hosts: [relay-b, mx2]}
      europe: {hosts: [backup]}
    """


def names(hosts: tuple[Host, ...]) -> list[str]:
    return [host.name for host in hosts]


@pytest.mark.parametrize(("limit", "expected"), [
    (None, ["mx1", "mx2", "relay-a", "relay-b", "backup"]),
    ("", ["mx1", "mx2", "relay-a", "relay-b", "backup"]),
    ("mx2", ["mx2"]),
    ("backup, mx1", ["mx1", "backup"]),
    ("relay-*", ["relay-a", "relay-b"]),
    ("edge", ["mx2", "relay-b"]),
    ("e*", ["mx2", "relay-b", "backup"]),  # globs match group names too
    ("edge,mx?,relay-b", ["mx1", "mx2", "relay-b"]),
    ("mx[12]", ["mx1", "mx2"]),
])
def test_select_by_names_groups_and_globs_in_inventory_order(tmp_path: Path, limit: str | None,
                                                             expected: list[str]) -> None:
    assert names(select(load(tmp_path, FLEET), limit)) == expected


@pytest.mark.parametrize("limit", ["mx9", "mx1,nothing*", "MX1"])
def test_select_refuses_a_pattern_that_matches_nothing(tmp_path: Path, limit: str) -> None:
    pattern = "unknown host or group in --limit: '(mx9|nothing\\*|MX1)'"
    with pytest.raises(ConfigError, match=pattern) as caught:
        select(load(tmp_path, FLEET), limit)
    assert caught.value.key == "--limit"


# --- write_inventory --------------------------------------------------------------------------------------

def test_write_inventory_writes_a_commented_file_that_loads(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    write_inventory(path, defaults={"user": "root", "trusted_networks": ["127.0.0.0/8", "[::1]/128"]},
                    hosts={"mx1": {"address": "10.99.0.11"},
                           "mx2": {"address": "10.99.0.12", "become": True}},
                    groups={"lab": {"hosts": ["mx1", "mx2"], "vars": {"policy": "auth-all"}}})
    text = path.read_text()
    assert text.startswith(f"# {HEADER}\n")
    inventory = load_inventory(path)
    assert names(inventory.hosts) == ["mx1", "mx2"]
    assert [h.policy for h in inventory.hosts] == ["auth-all", "auth-all"]
    assert inventory.hosts[1].connection.become is True


def test_write_inventory_refuses_an_invalid_inventory_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("old\n")
    with pytest.raises(ConfigError, match="hosts.mx1.port"):
        write_inventory(path, defaults={}, hosts={"mx1": {"address": "10.0.0.1", "port": 0}})
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["lab.yaml"]


# --- round trip -------------------------------------------------------------------------------------------

def networks(version: Literal[4, 6]) -> st.SearchStrategy[str]:
    def postfix(address: Any, prefix: int) -> str:
        net = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
        return str(net) if version == 4 else f"[{net.network_address}]/{net.prefixlen}"
    return st.builds(postfix, st.ip_addresses(v=version), st.integers(1, 32 if version == 4 else 128))


domains = st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9](\.[a-z][a-z0-9]{0,8}){0,3}", fullmatch=True)
paths = st.lists(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True), min_size=1, max_size=4) \
    .map(lambda parts: "/" + "/".join(parts)).filter(lambda p: "/.." not in p and "/./" not in p + "/")
SETTINGS = {
    "port": st.integers(1, 65535),
    "user": st.from_regex(r"[a-z_][a-z0-9_.-]{0,15}", fullmatch=True),
    "identity_file": st.none() | paths,
    "known_hosts": paths,
    "ssh_config": st.none() | paths,
    "become": st.booleans(),
    "password_env": st.none() | st.from_regex(r"[A-Z_][A-Z0-9_]{0,15}", fullmatch=True),
    "mta": st.sampled_from(MTAS),
    "policy": st.sampled_from(POLICIES),
    "trusted_networks": st.lists(networks(4) | networks(6), max_size=4),
    "probe_domain": domains,
    "mail_domain": st.none() | domains,
    "probe_port": st.integers(1, 65535),
    "connect_timeout": st.floats(min_value=0.001, max_value=1e6) | st.integers(1, 600),
}
addresses = st.ip_addresses().map(str) | domains
host_settings = st.fixed_dictionaries({"address": addresses}, optional=SETTINGS)
host_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(defaults=st.fixed_dictionaries({}, optional=SETTINGS),
       hosts=st.dictionaries(host_names, host_settings, min_size=1, max_size=5))
def test_valid_inventories_round_trip_through_write_and_load(tmp_path: Path, defaults: dict[str, Any],
                                                             hosts: dict[str, dict[str, Any]]) -> None:
    path = tmp_path / "roundtrip.yaml"
    write_inventory(path, defaults=defaults, hosts=hosts)
    loaded = load_inventory(path)
    expected = []
    for name, own in hosts.items():
        merged = {**defaults, **own}
        if "trusted_networks" in merged:
            merged["trusted_networks"] = tuple(ipaddress.ip_network(n.replace("[", "").replace("]", ""))
                                               for n in merged["trusted_networks"])
        if "connect_timeout" in merged:
            merged["connect_timeout"] = float(merged["connect_timeout"])
        expected.append(make_host(name, (), merged))
    assert loaded.hosts == tuple(expected)
