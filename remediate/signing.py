"""Ed25519 signatures over a plan's canonical bytes (`plan --sign KEY`, `apply --verify-with PUBKEY`).

Keys are files: a private key in OpenSSH (`ssh-keygen -t ed25519`) or PKCS#8 PEM form, unencrypted; a
public key as an OpenSSH line (`ssh-ed25519 AAAA... comment`, the `.pub` file) or PEM. The signature is
stored with the plan as `{"algorithm": "ed25519", "public_key": "ssh-ed25519 AAAA...", "value": BASE64}`;
verification uses the key the operator names, never the one the plan carries. Built on `cryptography`.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from remediate.errors import ConfigError


def load_private(path: str | Path) -> Ed25519PrivateKey:
    """The ed25519 private key in `path` (ConfigError naming the file when it is not one, or encrypted)."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the signing key: {exc.strerror or exc}", path=name) from exc
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not an unencrypted ed25519 private key ({exc})", path=name) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"a {type(key).__name__} key; plans are signed with ed25519 keys", path=name)
    return key


def _public(path: str | Path) -> Ed25519PublicKey:
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the public key: {exc.strerror or exc}", path=name) from exc
    try:
        if data.lstrip().startswith(b"ssh-"):
            key: Any = serialization.load_ssh_public_key(data.strip())
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not an ed25519 public key ({exc})", path=name) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"a {type(key).__name__} key; plans are verified with ed25519 keys", path=name)
    return key


def openssh_line(key: Ed25519PublicKey) -> str:
    """`ssh-ed25519 AAAA...` for `key`."""
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def sign(body: bytes, key_file: str | Path) -> dict[str, str]:
    """The signature record of `body` made with the private key in `key_file` (ConfigError naming it)."""
    key = load_private(key_file)
    return {"algorithm": "ed25519", "public_key": openssh_line(key.public_key()),
            "value": base64.b64encode(key.sign(body)).decode()}


def verify(body: bytes, record: Any, key_file: str | Path, plan_path: str) -> None:
    """`record` (a plan's `signature`) is a valid ed25519 signature of `body` by the key in `key_file`.
    ConfigError naming the plan file otherwise (unsigned, malformed, or signed by another key)."""
    key = _public(key_file)
    if not isinstance(record, dict) or record.get("algorithm") != "ed25519" or not isinstance(record.get("value"), str):
        raise ConfigError(f"the plan is not signed, and --verify-with {key_file} asks for a signature",
                          path=plan_path, key="signature")
    try:
        key.verify(base64.b64decode(record["value"], validate=True), body)
    except (InvalidSignature, ValueError) as exc:
        raise ConfigError(f"the plan's signature does not verify with {key_file} (signed by another key, or "
                          "edited after signing); nothing was contacted", path=plan_path, key="signature") from exc
