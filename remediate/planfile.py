"""Plan files (`remediate plan -o`): read and validated once, into a frozen `Plan`.

A plan file is the JSON report of a `plan` run; what `apply --plan` needs of it is, per host, the sha256
of each file as read (`pre_images`) and as the change would write it (`post_images`). Anything else in
the file is for people. A file that is not such a plan raises ConfigError naming the file and key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

from remediate.errors import ConfigError
from remediate.model import Plan, PlannedHost

_SHA256 = re.compile(r"[0-9a-f]{64}")


def load_plan(path: str | Path) -> Plan:
    """The approved plan at `path`. ConfigError (file, key) when it is unreadable or not a plan."""
    name = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"not a usable plan file: {exc}", path=name) from exc
    if not isinstance(data, dict) or data.get("command") != "plan":
        raise ConfigError("not a plan file (write one with `remediate plan -o FILE`)", path=name, key="command")
    if not isinstance(data.get("hosts"), list):
        raise ConfigError("must be a list of hosts", path=name, key="hosts")
    hosts: dict[str, PlannedHost] = {}
    for i, entry in enumerate(data["hosts"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError("each host needs a name", path=name, key=f"hosts[{i}].name")
        if not entry.get("pre_images"):
            continue   # a host the plan could not work (unreachable, failed, skipped): nothing approved
        pre = _images(entry, "pre_images", name, i)
        hosts[entry["name"]] = PlannedHost(entry["name"], pre, _images(entry, "post_images", name, i))
    return Plan(name, str(data.get("run_id", "")), MappingProxyType(hosts))


def _images(entry: dict[str, Any], key: str, path: str, i: int) -> MappingProxyType[str, str]:
    images = entry.get(key)
    if not isinstance(images, dict) or not all(
            isinstance(k, str) and k.startswith("/") and isinstance(v, str) and _SHA256.fullmatch(v)
            for k, v in images.items()):
        raise ConfigError("must map absolute paths to sha256 digests", path=path, key=f"hosts[{i}].{key}")
    return MappingProxyType(dict(images))
