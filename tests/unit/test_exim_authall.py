"""Policy auth-all for Exim: the demand for authentication goes right after the RCPT ACL's grants, once, and
audit and transform agree (every finding is what the transform fixes; none is left after it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediate.mta.exim.authall import DEMAND, TRUSTED, audit_auth_all, require_auth_all

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "exim"
WITH_RCPT_ACL = ["debian12-exim4.conf.template", "debian12-30_exim4-config_check_rcpt",
                 "open-relay-hosts.exim4.conf", "messy.exim4.conf", "no-relay-gate.30_exim4-config_check_rcpt"]


@pytest.mark.parametrize("name", WITH_RCPT_ACL)
def test_the_demand_goes_after_the_grants_once_and_clears_the_finding(name):
    text = (GOLDEN / name).read_bytes().decode()
    assert [f.code for f in audit_auth_all({"f": text}, {"f": f"/etc/exim4/{name}"})] == ["open_relay"]
    fixed = require_auth_all(text)
    assert require_auth_all(fixed) is fixed                        # idempotent, same object when nothing to do
    assert audit_auth_all({"f": fixed}, {"f": name}) == []
    lines = fixed.splitlines()
    at = next(i for i in range(len(lines)) if tuple(lines[i:i + 3]) == DEMAND)
    rcpt = "\n".join(lines[:at]).split("acl_check_rcpt:")[-1]
    accepts = [ln for ln in rcpt.splitlines() if ln.strip().startswith("accept")]
    assert len(accepts) <= 1, "before every accept but the one for local submission (hosts = :)"
    eol = "\r\n" if "\r\n" in text else "\n"
    block = "".join(ln + eol for ln in lines[at:at + 4] if ln in (*DEMAND, TRUSTED))
    assert block.startswith("".join(ln + eol for ln in DEMAND))
    assert fixed.replace(block, "", 1) == text


def test_a_demand_already_there_is_left_alone_but_a_port_limited_one_is_not():
    base = (GOLDEN / "debian12-30_exim4-config_check_rcpt").read_text()
    done = require_auth_all(base)
    assert require_auth_all(done) is done
    port = "    condition = ${if eq{$received_port}{587}}\n"
    limited = done.replace("    !authenticated = *\n", "    !authenticated = *\n" + port)
    assert limited != done
    assert audit_auth_all({"f": limited}, {}) and require_auth_all(limited) != limited


def test_text_without_an_rcpt_acl_comes_back_unchanged():
    text = (GOLDEN / "debian12-30_exim4-config_examples").read_text()
    assert require_auth_all(text) is text and audit_auth_all({"f": text}, {}) == []


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_any_text_is_handled_idempotently(text):
    once = require_auth_all(text)
    assert require_auth_all(once) == once
