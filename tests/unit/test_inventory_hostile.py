"""Hostile inventories (issue #11): random YAML and random structures always end in exit 2 naming the file
(and the line and key where there is one), never a traceback; values carrying shell metacharacters,
newlines or option-like text are refused at load; and no value reaches a remote shell unquoted."""

from __future__ import annotations

import io
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from remediate.cli.common import EXIT_USAGE, load_hosts
from remediate.errors import ConfigError
from remediate.inventory import load_inventory
from remediate.model import Host, SshConnection
from remediate.shell import PosixShell
from remediate.transport import Connection, Local

HOSTILE = ["-oProxyCommand=touch /tmp/pwned", "a;reboot", "$(id)", "`id`", "a b", "a\nb", "a|b", "a&&b",
           "a>b", "'quoted'", '"dq"', "a\\b", "-", "--", "a\x00b", "a\rb", "~root;id", "a*", "a?", "{a,b}"]
KEYS = ["user", "address", "mail_domain", "probe_domain", "identity_file", "known_hosts", "ssh_config",
        "password_env", "mta", "policy", "connection"]
EVERYWHERE = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _exit_2_naming_the_file(path: Path) -> str:
    """Load `path` as the CLI does; the message it printed (exit 2 asserted), or "" when it loaded."""
    try:
        load_inventory(path)
    except ConfigError as exc:
        assert exc.path == str(path), exc
        with pytest.raises(typer.Exit) as stopped:
            load_hosts(path, None)
        assert stopped.value.exit_code == EXIT_USAGE
        return str(exc)
    return ""


# --- random input ---------------------------------------------------------------------------------------

@EVERYWHERE
@given(text=st.text(max_size=400) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_random_text_is_refused_naming_the_file_never_a_traceback(tmp_path: Path, text: str,
                                                                  reliability: Any) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    message = _exit_2_naming_the_file(path)
    assert message.startswith(str(path)) or message == ""
    reliability("hostile input", "inventory: random text and bytes (hypothesis, 150 examples)",
                "exit 2 naming the file (and line, key where there is one); never a traceback",
                "nothing contacted")


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
STRUCTURES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.sampled_from(KEYS + ["hosts", "groups", "defaults", "vars"])
                                            | st.text(max_size=10), inner, max_size=4), max_leaves=20)


def _dump(doc: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(doc, out)
    return out.getvalue()


@EVERYWHERE
@given(doc=st.fixed_dictionaries({}, optional={"defaults": STRUCTURES, "hosts": STRUCTURES,
                                                "groups": STRUCTURES}) | STRUCTURES)
def test_random_structures_are_refused_naming_file_line_and_key(tmp_path: Path, doc: Any, reliability: Any) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(_dump(doc))
    try:
        load_inventory(path)
    except ConfigError as exc:
        assert exc.path == str(path)
        assert exc.line is not None or exc.key is not None or "expected a mapping" in str(exc) \
            or "empty" in str(exc), str(exc)   # a whole-file problem has no line or key to name
    reliability("hostile input", "inventory: random YAML structures (hypothesis, 150 examples)",
                "ConfigError naming file, line and key (a whole-file problem: the file); never a traceback",
                "nothing contacted")


@EVERYWHERE
@given(key=st.sampled_from(KEYS), where=st.sampled_from(["defaults", "host"]), value=st.sampled_from(HOSTILE))
def test_metacharacters_newlines_and_options_are_refused_at_load(tmp_path: Path, key: str, where: str,
                                                                 value: str, reliability: Any) -> None:
    yaml_value = YAML(typ="safe", pure=True)
    hosts: dict[str, Any] = {"mx1": {"address": "192.0.2.10"}}
    defaults: dict[str, Any] = {}
    (defaults if where == "defaults" and key != "address" else hosts["mx1"])[key] = value
    path = tmp_path / "inventory.yaml"
    out = io.StringIO()
    yaml_value.dump({"defaults": defaults, "hosts": hosts}, out)
    path.write_text(out.getvalue())
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    exc = caught.value
    assert exc.path == str(path) and exc.line is not None and exc.key is not None and key in exc.key, str(exc)
    if key == "password_env" and len(value) > 3:
        assert value not in str(exc), "a value that might be a secret is never echoed"
    reliability("hostile input", "inventory: shell metacharacters, newlines, `-oProxyCommand=...` in user, "
                "address, domains, paths, env name, mta, policy", "refused at load naming file, line and key",
                "nothing contacted")


def test_hostile_host_and_group_names_are_refused(tmp_path: Path, reliability: Any) -> None:
    for name in HOSTILE:
        for text in (f"hosts:\n  {_quoted(name)}: {{address: 192.0.2.10}}\n",
                     f"hosts:\n  mx1: {{address: 192.0.2.10}}\ngroups:\n  {_quoted(name)}: {{hosts: [mx1]}}\n"):
            path = tmp_path / "inventory.yaml"
            path.write_text(text)
            assert _exit_2_naming_the_file(path).startswith(f"{path}:"), name
    reliability("hostile input", f"inventory: host and group names carrying metacharacters, newlines, NUL, "
                f"option-like text ({len(HOSTILE)} values)", "exit 2 naming file, line and key", "nothing contacted")


def _quoted(value: str) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(value, out)
    return out.getvalue().strip().removesuffix("...").strip()


# --- nothing reaches a remote shell unquoted ------------------------------------------------------------

@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.text(min_size=0, max_size=40).filter(lambda s: "\x00" not in s), min_size=1, max_size=6),
       become=st.booleans())
def test_every_remote_command_line_splits_back_into_exactly_its_arguments(argv: list[str], become: bool,
                                                                         reliability: Any) -> None:
    conn = Connection(Host("mx1", "192.0.2.10", SshConnection(become=become)))
    line = conn.command_line(argv)
    assert shlex.split(line) == (["sudo", "-n", "--"] if become else []) + argv
    reliability("security", "any argument vector (hypothesis) as a remote command line, with and without become",
                "shlex-quoted: the remote shell splits it back into exactly its arguments", "no injection")


def test_a_hostile_path_is_written_literally_by_a_real_shell(tmp_path: Path, reliability: Any) -> None:
    """The shell's scripts receive paths as quoted positional arguments: run them through a real `sh`."""
    shell = PosixShell(Local(Host("local", "127.0.0.1")))
    for name in ["$(touch pwned)", "`touch pwned`", "a;touch pwned", "-oProxyCommand=touch pwned", "a\nb"]:
        target = tmp_path / name.replace("/", "_")
        st = shell.stat(str(tmp_path))
        shell.write_atomic(str(target), b"data\n", mode=0o600, uid=st.uid, gid=st.gid)
        assert target.read_bytes() == b"data\n" and shell.read(str(target)) == b"data\n"
    listing = subprocess.run(["ls", "-A", str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "pwned" not in listing.split("\n"), listing
    reliability("security", "file paths `$(touch pwned)`, backticks, `;`, `-oProxyCommand=`, a newline, through "
                "the shell's own scripts and a real sh", "written and read literally", "no command ran")
