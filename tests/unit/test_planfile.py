"""Plan files: sealed when written; refused when edited (any byte), truncated, expired, of another tool
or driver version, or signed by another key; rendered for a ticket. Pure: no host, no network."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediate import plandoc, planfile
from remediate.errors import ConfigError
from remediate.model import Finding, HostPlan, HostResult, RunResult, Status

SHA = "ab" * 32
DIFF = "--- a/etc/mta/conf\n+++ b/etc/mta/conf\n@@ -1 +1 @@\n-relay = everyone\n+relay = <local> & \"quoted\"\n"


def _run() -> RunResult:
    plan = HostPlan("SHA256:abcdefghijklmnop", "fakemta", "fakemta@1", "cd" * 32,
                    (("/etc/mta/conf", SHA), ("/etc/mta/derived.db", "ef" * 32)), (("/etc/mta/conf", "01" * 32),),
                    ("check --dir '{private copy}'",), ("reload-mta",))
    run = RunResult("20261128T210317Z-d4da", "plan")
    run.hosts = [
        HostResult("mx1", "192.0.2.11", Status.WOULD_CHANGE, (Finding("open_relay", "relay accepted for 16 of 16"),),
                   changed=True, diff=DIFF, simulation="verdict secure", plan=plan),
        HostResult("mx2", "192.0.2.12", Status.COMPLIANT, plan=HostPlan(
            None, "fakemta", "fakemta@1", "cd" * 32, (("/etc/mta/conf", SHA),), (("/etc/mta/conf", SHA),))),
        HostResult("mx3", "192.0.2.13", Status.UNREACHABLE, error="cannot connect <b>"),
    ]
    return run


@pytest.fixture
def written(tmp_path: Path) -> Path:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts: {}\n")
    doc = planfile.seal(planfile.document(_run(), inventory, expires_in=3600))
    path = tmp_path / "plan.json"
    planfile.write_plan(doc, path)
    return path


def test_a_sealed_plan_loads_with_what_apply_needs(written):
    plan = planfile.load_plan(written)
    assert set(plan.hosts) == {"mx1", "mx2"}          # the unreachable host was not approved
    mx1 = plan.hosts["mx1"]
    assert mx1.address == "192.0.2.11" and mx1.plan.host_key == "SHA256:abcdefghijklmnop"
    assert dict(mx1.plan.resources)["/etc/mta/derived.db"] == "ef" * 32
    assert dict(mx1.plan.candidate) == {"/etc/mta/conf": "01" * 32}
    assert plan.expires - plan.created == 3600


def test_the_plan_file_is_readable_json_with_a_stable_key_order_and_its_digest(written):
    doc = json.loads(written.read_text())
    assert list(doc)[:6] == ["format", "command", "run_id", "tool", "created", "expires"]
    assert list(doc)[-1] == "digest"
    assert doc["summary"] == {"hosts": 3, "compliant": 1, "unreachable": 1, "would_change": 1}
    assert doc["hosts"][0]["commands"] == {"validate": ["check --dir '{private copy}'"], "activate": ["reload-mta"]}
    assert written.read_text().count("\n") > 40      # indented, one key a line: a person can read it
    # the digest is sha256 of the canonical JSON of everything else (README, "Plan files")
    import hashlib
    body = {k: v for k, v in doc.items() if k != "digest"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert doc["digest"] == {"algorithm": "sha256", "value": hashlib.sha256(canon).hexdigest()}


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(st.data())   # the fixture's file is only read: one for every example is right
def test_any_single_byte_changed_anywhere_is_refused(written, data):
    raw = written.read_bytes()
    at = data.draw(st.integers(0, len(raw) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
    edited = written.with_name("edited.json")
    edited.write_bytes(raw[:at] + bytes([byte]) + raw[at + 1:])
    with pytest.raises(ConfigError) as caught:
        planfile.load_plan(edited)
    assert str(edited) in str(caught.value)


def test_an_edited_value_with_a_well_formed_file_is_refused_for_its_digest(written):
    doc = json.loads(written.read_text())
    doc["hosts"][0]["candidate"]["/etc/mta/conf"] = "02" * 32
    written.write_text(planfile.dumps(doc))
    with pytest.raises(ConfigError, match="edited after it was made: its content does not match its digest"):
        planfile.load_plan(written)


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_a_truncated_plan_is_refused(written, cut):
    raw = written.read_bytes()
    written.write_bytes(raw[:int(len(raw) * cut)])
    with pytest.raises(ConfigError, match="truncated"):
        planfile.load_plan(written)


def test_a_report_or_other_json_is_not_a_plan(tmp_path):
    other = tmp_path / "scan.json"
    other.write_text('{"command": "scan", "hosts": []}')
    with pytest.raises(ConfigError, match="not a plan file"):
        planfile.load_plan(other)


def test_an_expired_plan_is_refused_naming_when_it_expired(written):
    plan = planfile.load_plan(written)
    with pytest.raises(ConfigError, match="expired at") as caught:
        planfile.load_plan(written, now=plan.expires + 1)
    assert "expires" in str(caught.value)


def test_a_plan_of_another_driver_version_is_refused(written):
    with pytest.raises(ConfigError, match="another version of the fakemta driver"):
        planfile.load_plan(written, driver_digest=lambda name: "00" * 32)
    assert planfile.load_plan(written, driver_digest=lambda name: "cd" * 32).hosts


def test_a_plan_of_another_tool_version_is_refused(written, monkeypatch):
    monkeypatch.setattr(planfile, "__version__", "9.9.9")
    with pytest.raises(ConfigError, match="made by remediate 0.1.0, this is 9.9.9"):
        planfile.load_plan(written)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800)])
def test_expiry_durations(text, seconds):
    assert planfile.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "0h", "24", "1.5h", "-3m", "3w"])
def test_bad_expiry_durations_are_refused(bad):
    with pytest.raises(ValueError, match="not a duration"):
        planfile.parse_duration(bad)


# ---------------------------------------------------------------------- signatures
def _keypair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key, key.with_suffix(".pub")


def test_a_signed_plan_verifies_with_the_approvers_key_only(tmp_path):
    approver, approver_pub = _keypair(tmp_path, "approver")
    _, other_pub = _keypair(tmp_path, "other")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts: {}\n")
    path = tmp_path / "plan.json"
    planfile.write_plan(planfile.seal(planfile.document(_run(), inventory), approver), path)
    assert planfile.load_plan(path, verify_with=approver_pub).signed_by.startswith("ssh-ed25519 ")
    with pytest.raises(ConfigError, match="does not verify"):
        planfile.load_plan(path, verify_with=other_pub)
    # re-sealed after an edit (a valid digest), the approver's signature no longer holds
    doc = json.loads(path.read_text())
    doc["hosts"][0]["candidate"]["/etc/mta/conf"] = "02" * 32
    planfile.write_plan(planfile.seal(doc) | {"signature": doc["signature"]}, path)
    with pytest.raises(ConfigError, match="does not verify"):
        planfile.load_plan(path, verify_with=approver_pub)


def test_an_unsigned_plan_is_refused_when_a_signature_is_required(written, tmp_path):
    _, pub = _keypair(tmp_path, "approver")
    with pytest.raises(ConfigError, match="not signed"):
        planfile.load_plan(written, verify_with=pub)


def test_a_key_that_is_not_ed25519_is_refused_naming_the_file(tmp_path):
    rsa = tmp_path / "rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True)
    with pytest.raises(ConfigError, match=f"{rsa}: a RSAPrivateKey key"):
        planfile.seal({"hosts": []}, rsa)
    with pytest.raises(ConfigError, match="not an unencrypted ed25519 private key"):
        planfile.seal({"hosts": []}, tmp_path / "rsa.pub")


# ---------------------------------------------------------------------- rendering for a ticket
def test_markdown_shows_summary_each_host_its_diff_findings_reloads_and_expiry(written):
    doc = planfile.read_document(written)
    md = plandoc.markdown(doc)
    assert "3 host(s): compliant 1, unreachable 1, would_change 1" in md
    assert f"| expires | {doc['expires']} |" in md
    for name in ("mx1", "mx2", "mx3"):
        assert f"## {name} (" in md
    assert "```diff\n" + DIFF.rstrip("\n") + "\n```" in md
    assert "open_relay (probe): relay accepted for 16 of 16" in md
    assert "`reload-mta`" in md and "Will change, then validate, reload and verify from outside" in md
    assert doc["digest"]["value"] in md


def test_html_is_one_self_contained_page_that_escapes_what_it_shows(written):
    page = plandoc.html_page(planfile.read_document(written))
    assert page.startswith("<!DOCTYPE html>")
    for name in ("mx1", "mx2", "mx3"):
        assert f'<section class="host" id="host-{name}"' in page
    assert '<pre class="diff" data-host="mx1">' in page
    assert "&lt;local&gt; &amp; &quot;quoted&quot;" in page and "cannot connect &lt;b&gt;" in page
    for fetch in ("http://", "https://", "<script", "<link", "src=", "@import", "url("):
        assert fetch not in page, fetch


def test_plans_are_made_within_a_second_of_now(written):
    plan = planfile.load_plan(written)
    assert abs(plan.created - time.time()) < 60


# ---------------------------------------------------------------------- what a plan pins of a driver
@pytest.mark.parametrize("name", ["postfix", "exim", "sendmail"])
def test_every_driver_says_what_will_run_with_no_placeholder_left(name):
    from remediate import mta

    validate, activate = mta.driver_for(name).commands()
    assert validate and activate
    for command in validate + activate:
        for placeholder in ("{dir}", "{config}", "{client}", "{host."):
            assert placeholder not in command, command


def test_a_driver_digest_changes_with_its_playbook(tmp_path):
    import shutil

    from remediate.mta import DRIVERS
    from remediate.mta.playbook import PLAYBOOK_DIR

    shutil.copytree(PLAYBOOK_DIR, tmp_path / "playbooks")
    same = DRIVERS["postfix"](tmp_path / "playbooks").digest()
    assert same == DRIVERS["postfix"](PLAYBOOK_DIR).digest()
    with open(tmp_path / "playbooks" / "postfix.yaml", "a") as fh:
        fh.write("# one more comment\n")
    assert DRIVERS["postfix"](tmp_path / "playbooks").digest() != same
