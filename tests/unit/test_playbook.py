"""Playbooks load once into frozen objects; a bad one is refused naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediate.errors import ConfigError
from remediate.playbook import PLAYBOOK_DIR, fill, load_playbook, playbook_for, resolve_args
from remediate.transforms import TRANSFORMS

POSTFIX = (PLAYBOOK_DIR / "postfix.yaml").read_text()


def test_the_postfix_playbook_loads_with_both_policies_and_real_transforms():
    pb = playbook_for("postfix")
    assert set(pb.policies) == {"relay-auth", "auth-all"}
    assert pb.files == {"main_cf": "/etc/postfix/main.cf", "master_cf": "/etc/postfix/master.cf"}
    for policy in pb.policies.values():
        assert all(step.fn is TRANSFORMS[step.transform] for step in policy.steps)
    assert pb.policies["relay-auth"].expect_local == "accept"
    assert pb.policies["auth-all"].expect_local == "refuse"
    assert pb.reload == ("postfix", "reload")


def _broken(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    text = POSTFIX.replace(old, new, 1)
    assert text != POSTFIX
    path = tmp_path / "postfix.yaml"
    path.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if new.splitlines()[-1] in ln)
    return path, line


@pytest.mark.parametrize(("old", "new", "key"), [
    ("transform: secure_relay_restrictions}", "transform: smtpd_authentication_required}",
     "policies.relay-auth.transforms[0].transform"),
    ("reload: [postfix, reload]", "reload: [postfix, reload]\nrestart: [postfix, restart]", "restart"),
    ("{file: main_cf, transform: ensure_noanonymous}", "{file: main.cf, transform: ensure_noanonymous}",
     "policies.relay-auth.transforms[3].file"),
    ("expect_local: refuse", "expect_local: maybe", "policies.auth-all.expect_local"),
])
def test_a_bad_playbook_names_file_line_and_key(tmp_path, old, new, key):
    path, line = _broken(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_playbook(path)
    assert str(err.value).startswith(f"{path}:{line}: {key}: ")


def test_an_unknown_mta_lists_what_exists():
    with pytest.raises(ConfigError, match="available: postfix"):
        playbook_for("qmail")


def test_placeholders_are_filled_from_host_and_candidate_texts():
    class Host:
        trusted_networks = ("127.0.0.0/8", "[::1]/128")

    args = resolve_args({"trusted_networks": "{host.trusted_networks}", "main_cf": "{file.main_cf}", "x": 1},
                        Host(), {"main_cf": "mynetworks = 127.0.0.0/8\n"})
    assert args == {"trusted_networks": ["127.0.0.0/8", "[::1]/128"], "main_cf": "mynetworks = 127.0.0.0/8\n",
                    "x": 1}
    assert fill(("postfix", "-c", "{dir}", "check"), dir="/tmp/x") == ["postfix", "-c", "/tmp/x", "check"]
