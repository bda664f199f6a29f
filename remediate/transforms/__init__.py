"""Pure text transforms, by name: what a playbook step calls to edit a configuration file.

Every transform is ``fn(text: str, **params) -> str``: pure, idempotent, returns ``text`` itself when
nothing needs changing, and keeps every byte outside the edited lines. ``TRANSFORMS`` is the registry the
playbook loader resolves step names against.
"""

from __future__ import annotations

from collections.abc import Callable

from remediate.transforms.postfix import (
    Finding,
    audit,
    ensure_noanonymous,
    ensure_parameter,
    get_parameter,
    postfix_effective,
    remove_unsafe_overrides,
    require_auth_all,
    restrict_mynetworks,
    secure_recipient_restrictions,
    secure_relay_restrictions,
)

TRANSFORMS: dict[str, Callable[..., str]] = {
    "ensure_parameter": ensure_parameter,
    "secure_relay_restrictions": secure_relay_restrictions,
    "secure_recipient_restrictions": secure_recipient_restrictions,
    "restrict_mynetworks": restrict_mynetworks,
    "ensure_noanonymous": ensure_noanonymous,
    "require_auth_all": require_auth_all,
    "remove_unsafe_overrides": remove_unsafe_overrides,
}

__all__ = ["TRANSFORMS", "Finding", "audit", "get_parameter", "postfix_effective"]
