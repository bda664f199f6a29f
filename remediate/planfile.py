"""Plan files (`remediate plan -o`): written sealed, and read back validated once, into a frozen `Plan`.

A plan file is a JSON document (README, "Plan files") holding, per host, the address and host key seen,
the driver and the digest of its playbook and code, the sha256 of every resource read, the unified diff,
the candidate's sha256s, the commands that will run and the findings; plus the tool version, the
inventory's sha256, when it was made and when it expires. It is sealed:

    digest = sha256(canonical JSON of the document without `digest` and `signature`)
    canonical JSON = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True), UTF-8

and optionally signed (ed25519 over the same canonical bytes; `signature`). `load_plan` refuses
(ConfigError naming the file and key) anything but an intact, unexpired plan of this format and tool
version: a file that is not JSON or not a plan, a changed byte anywhere (the file must also be exactly
as `remediate` writes it, so even a whitespace edit is refused), a wrong digest or signature, and a sealed
document whose keys do not hold what `document` writes there (wrong types, missing keys).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from remediate import __version__
from remediate.errors import ConfigError
from remediate.model import HostPlan, Plan, PlannedHost, RunResult

FORMAT = "remediate-plan/1"
DEFAULT_EXPIRY = 24 * 3600.0   # seconds
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SEALS = ("digest", "signature")


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `24h`, `7d` -> seconds (> 0). ValueError naming the accepted forms otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration (a positive number with s, m, h or d: 90s, 30m, 24h)")
    return float(int(match.group(1)) * _UNITS[match.group(2)])


# ---------------------------------------------------------------------- writing
def document(run: RunResult, inventory: str | Path, *, expires_in: float = DEFAULT_EXPIRY,
             now: float | None = None) -> dict[str, Any]:
    """The plan document of a `plan` run (unsealed): header, summary counts, one entry per host in
    inventory order. `inventory` is hashed (sha256 of its bytes); `expires_in` in seconds."""
    created = int(now if now is not None else time.time())
    counts = Counter(h.status.value for h in run.hosts)
    return {
        "format": FORMAT,
        "command": "plan",
        "run_id": run.run_id,
        "tool": {"name": "remediate", "version": __version__},
        "created": _iso(created),
        "expires": _iso(created + int(expires_in)),
        "inventory": {"path": str(inventory), "sha256": hashlib.sha256(Path(inventory).read_bytes()).hexdigest()},
        "summary": {"hosts": len(run.hosts), **dict(sorted(counts.items()))},
        "hosts": [h.as_dict() for h in run.hosts],
    }


def canonical(doc: Mapping[str, Any]) -> bytes:
    """The bytes the digest and the signature cover: `doc` without its seals, as canonical JSON."""
    body = {k: v for k, v in doc.items() if k not in _SEALS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def seal(doc: dict[str, Any], sign_with: str | Path | None = None) -> dict[str, Any]:
    """`doc` with its `digest` (and, given an ed25519 private key file, OpenSSH or PEM, unencrypted, its
    `signature`). ConfigError naming the key file when it is not such a key."""
    sealed = {k: v for k, v in doc.items() if k not in _SEALS}
    body = canonical(sealed)
    sealed["digest"] = {"algorithm": "sha256", "value": hashlib.sha256(body).hexdigest()}
    if sign_with is not None:
        from remediate import signing

        sealed["signature"] = signing.sign(body, sign_with)
    return sealed


def dumps(doc: Mapping[str, Any]) -> str:
    """The plan file's text: indented JSON in the document's own (stable) key order."""
    return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"


def write_plan(doc: Mapping[str, Any], path: str | Path) -> None:
    """Write the sealed plan atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(doc))
    tmp.replace(path)


# ---------------------------------------------------------------------- reading
def read_document(path: str | Path, verify_with: str | Path | None = None) -> dict[str, Any]:
    """The plan document at `path`, intact: JSON, this format, exactly as written, digest (and, with
    `verify_with`, an ed25519 public key file, the signature) right, every key its readers use holding what
    `document` writes there. ConfigError (file, key) otherwise."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("ascii")
        doc = json.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read the plan file: {exc.strerror or exc}", path=name) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not a plan file, or a damaged one: byte {exc.start} is not ASCII (remediate writes "
                          "plan files in ASCII)", path=name) from exc
    except (ValueError, RecursionError) as exc:
        why = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise ConfigError(f"not a plan file, or a damaged or truncated one (not valid JSON: {why})",
                          path=name) from exc
    if not isinstance(doc, dict) or doc.get("command") != "plan":
        raise ConfigError("not a plan file (write one with `remediate plan -o FILE`)", path=name, key="command")
    if doc.get("format") != FORMAT:
        raise ConfigError(f"plan format {doc.get('format')!r} is not {FORMAT!r}; make the plan again with this "
                          "version (`remediate plan -o FILE`)", path=name, key="format")
    digest = doc.get("digest")
    if not isinstance(digest, dict) or digest.get("algorithm") != "sha256":
        raise ConfigError("the plan carries no sha256 digest", path=name, key="digest")
    if digest.get("value") != hashlib.sha256(canonical(doc)).hexdigest():
        raise ConfigError("the plan was edited after it was made: its content does not match its digest; "
                          "nothing was contacted. Use the approved file, or make and approve a new plan",
                          path=name, key="digest")
    if text != dumps(doc):
        raise ConfigError("the plan file was edited after it was made (its bytes are not as remediate wrote "
                          "them); nothing was contacted", path=name)
    _check_shape(doc, name)
    if verify_with is not None:
        from remediate import signing

        signing.verify(canonical(doc), doc.get("signature"), verify_with, name)
    return doc


def _is(kind: type, optional: bool = False) -> Callable[[Any], bool]:
    """A check that a value is a `kind` (a bool is no int here), or None when `optional`."""
    def check(value: Any) -> bool:
        if value is None:
            return optional
        return isinstance(value, bool) if kind is bool else isinstance(value, kind) and not isinstance(value, bool)
    return check


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _digests(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


_DOC: dict[str, Callable[[Any], bool]] = {
    "run_id": _is(str), "created": _is(str), "expires": _is(str), "hosts": _is(list),
    "tool": lambda v: isinstance(v, dict) and all(isinstance(v.get(k), str) for k in ("name", "version")),
    "inventory": lambda v: isinstance(v, dict) and all(isinstance(v.get(k), str) for k in ("path", "sha256")),
    "summary": lambda v: isinstance(v, dict) and all(type(x) is int for x in v.values())}
_HOST: dict[str, Callable[[Any], bool]] = {
    "name": _is(str), "address": _is(str), "status": _is(str), "reason": _is(str, True), "error": _is(str, True),
    "diff": _is(str, True), "simulation": _is(str, True), "backup_id": _is(str, True), "changed": _is(bool),
    "host_key": _is(str, True), "notes": _strings,
    "findings_before": lambda v: isinstance(v, list) and all(_finding(f) for f in v),
    "findings_after": lambda v: isinstance(v, list) and all(_finding(f) for f in v),
    "driver": lambda v: isinstance(v, dict) and all(isinstance(v.get(k), str) for k in ("name", "playbook", "digest")),
    "resources": _digests, "candidate": _digests,
    "commands": lambda v: isinstance(v, dict) and all(_strings(v.get(k, [])) for k in ("validate", "activate"))}
_OPTIONAL = frozenset({"reason", "backup_id", "host_key", "driver", "resources", "candidate", "commands"})


def _finding(f: Any) -> bool:
    return isinstance(f, dict) and all(isinstance(f.get(k), str) for k in ("code", "detail", "source")) \
        and _is(str, True)(f.get("file")) and _is(str, True)(f.get("parameter")) and _is(int, True)(f.get("line"))


def _check_shape(doc: Mapping[str, Any], path: str) -> None:
    """Every key the plan's readers use holds what `document` writes there: ConfigError naming the file and
    the key otherwise (a plan sealed by something else than this tool, or by a bug)."""
    for key, valid in _DOC.items():
        if not valid(doc.get(key)):
            raise ConfigError("missing, or not what a plan holds there", path=path, key=key)
    for i, host in enumerate(doc["hosts"]):
        if not isinstance(host, dict):
            raise ConfigError("must be a host entry", path=path, key=f"hosts[{i}]")
        for key, valid in _HOST.items():
            if (key in host or key not in _OPTIONAL) and not valid(host.get(key)):
                raise ConfigError("missing, or not what a plan holds there", path=path, key=f"hosts[{i}].{key}")


def load_plan(path: str | Path, *, verify_with: str | Path | None = None, now: float | None = None,
              driver_digest: Callable[[str], str] | None = None) -> Plan:
    """The approved plan at `path`, refused (ConfigError naming file and key; the caller has contacted
    nothing) when it is not intact (`read_document`), made by another tool version, expired at `now`
    (epoch seconds; default: the clock), malformed, or when `driver_digest(driver name)` (today's digest
    of that driver's playbook and code) differs from the one a host was planned with."""
    name = str(path)
    doc = read_document(path, verify_with)
    version = (doc.get("tool") or {}).get("version")
    if version != __version__:
        raise ConfigError(f"made by remediate {version}, this is {__version__}; make the plan again",
                          path=name, key="tool.version")
    created, expires = _time(doc, "created", name), _time(doc, "expires", name)
    now = time.time() if now is None else now
    if now >= expires:
        raise ConfigError(f"the plan expired at {doc['expires']} (made {doc['created']}); make and approve a "
                          "new one (`remediate plan --expires` sets the validity)", path=name, key="expires")
    if not isinstance(doc.get("hosts"), list):
        raise ConfigError("must be a list of hosts", path=name, key="hosts")
    hosts: dict[str, PlannedHost] = {}
    for i, entry in enumerate(doc["hosts"]):
        planned = _host(entry, name, i)
        if planned is None:
            continue   # a host the plan could not work (unreachable, failed, skipped): nothing approved
        if driver_digest is not None and driver_digest(planned.plan.driver) != planned.plan.driver_digest:
            raise ConfigError(f"host {planned.name} was planned with another version of the {planned.plan.driver} "
                              f"driver or playbook ({planned.plan.playbook}); make and approve a new plan",
                              path=name, key=f"hosts[{i}].driver.digest")
        hosts[planned.name] = planned
    signer = (doc.get("signature") or {}).get("public_key") if verify_with is not None else None
    return Plan(name, str(doc.get("run_id", "")), MappingProxyType(hosts), created, expires,
                doc["digest"]["value"], signer)


def _host(entry: Any, path: str, i: int) -> PlannedHost | None:
    where = f"hosts[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
            or not isinstance(entry.get("address"), str):
        raise ConfigError("each host needs a name and an address", path=path, key=where)
    if not entry.get("resources"):
        return None
    driver = entry.get("driver")
    if not isinstance(driver, dict) or not all(isinstance(driver.get(k), str) for k in ("name", "playbook", "digest")):
        raise ConfigError("must name the driver, its playbook and digest", path=path, key=f"{where}.driver")
    key = entry.get("host_key")
    if key is not None and not isinstance(key, str):
        raise ConfigError("must be a host key fingerprint", path=path, key=f"{where}.host_key")
    commands = entry.get("commands") or {}
    plan = HostPlan(key, driver["name"], driver["playbook"], driver["digest"],
                    _images(entry, "resources", path, where), _images(entry, "candidate", path, where),
                    tuple(commands.get("validate", ())), tuple(commands.get("activate", ())))
    return PlannedHost(entry["name"], entry["address"], plan)


def _images(entry: dict[str, Any], key: str, path: str, where: str) -> tuple[tuple[str, str], ...]:
    images = entry.get(key)
    if not isinstance(images, dict) or not all(
            isinstance(k, str) and k.startswith("/") and isinstance(v, str) and _SHA256.fullmatch(v)
            for k, v in images.items()):
        raise ConfigError("must map absolute paths to sha256 digests", path=path, key=f"{where}.{key}")
    return tuple(sorted(images.items()))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _time(doc: Mapping[str, Any], key: str, path: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(str(doc.get(key)), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError as exc:
        raise ConfigError("must be a UTC time like 2026-11-28T21:03:17Z", path=path, key=key) from exc


def signature_text(doc: Mapping[str, Any]) -> str:
    """One line about the plan's signature, for people (who signed, with which key), or `unsigned`."""
    sig = doc.get("signature")
    if not isinstance(sig, dict):
        return "unsigned"
    key = str(sig.get("public_key", ""))
    try:
        blob = base64.b64decode(key.split()[1])
        fp = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    except (IndexError, ValueError):
        fp = key
    return f"signed ({sig.get('algorithm')}, key {fp})"
