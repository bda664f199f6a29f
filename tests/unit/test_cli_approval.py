"""The approval options on the command line: bad input exits 2 naming the option, before any host is
contacted (the inventory points at an address nobody answers on, and no run folder is made)."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli

INVENTORY = "hosts:\n  mx1: {address: 192.0.2.1}\n"


@pytest.fixture
def here(tmp_path):
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    return tmp_path


@pytest.mark.parametrize(("args", "says"), [
    (["apply", "--yes", "--serial", "0"], "--serial: '0' is not a wave size"),
    (["apply", "--yes", "--serial", "1,150%"], "--serial: '150%' is not a wave size"),
    (["apply", "--yes", "--window", "22:00"], "--window: '22:00' is not a window"),
    (["apply", "--yes", "--canary", "1", "--serial", "1,100%"], "--canary K is --serial K,100%"),
    (["apply", "--pause-after-canary", "--serial", "1,100%"], "--pause-after-canary asks on a terminal"),
    (["apply", "--yes", "--pause-after-canary"], "--pause-after-canary needs waves"),
    (["apply", "--yes", "--verify-with", "key.pub"], "--verify-with checks a plan's signature"),
    (["plan", "--expires", "tomorrow"], "--expires: 'tomorrow' is not a duration"),
    (["plan", "--sign", "nosuchkey"], "nosuchkey: cannot read the signing key"),
    (["plan", "--from", "nosuchplan.json", "--format", "md"], "nosuchplan.json: cannot read the plan file"),
    (["apply", "--yes", "--plan", "nosuchplan.json"], "nosuchplan.json: cannot read the plan file"),
])
def test_bad_approval_options_exit_2_naming_the_option_and_contact_nobody(here, args, says):
    proc = run_cli(*args, "-i", "inventory.yaml", cwd=here, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert says in " ".join(proc.stderr.split()), proc.stderr
    assert not (here / "runs").exists() and not (here / "backups").exists()


def test_status_takes_an_inventory_and_refuses_a_bad_one(here):
    assert run_cli("status", "-i", "inventory.yaml", cwd=here).returncode == 0
    (here / "bad.yaml").write_text("hosts:\n  mx1: {adress: 192.0.2.1}\n")
    proc = run_cli("status", "-i", "bad.yaml", cwd=here)
    assert proc.returncode == 2 and "adress" in proc.stderr
