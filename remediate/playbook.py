"""Playbooks: per-MTA remediation definitions in YAML, validated once at load into frozen objects.

A playbook names the files involved, the transforms per policy (by name, from `remediate.transforms`),
the read-only fact commands, the validation and simulation commands run against a private copy of the
configuration, and the reload command. The engine (orchestrator) interprets it; adding an MTA is mostly
a new playbook plus its transforms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from remediate.errors import ConfigError
from remediate.transforms import TRANSFORMS

PLAYBOOK_DIR = Path(__file__).resolve().parent.parent / "playbooks"
TOP_KEYS = {"mta", "version", "config_dir", "files", "facts", "policies", "validate", "simulate", "reload",
            "check_live"}
STEP_KEYS = {"file", "transform", "with"}
POLICY_KEYS = {"description", "expect_local", "transforms"}
SIMULATE_KEYS = {"argv", "service", "xclient_addr"}


@dataclass(frozen=True, slots=True)
class Step:
    file: str
    transform: str
    fn: Callable[..., str]
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    description: str
    expect_local: str
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Simulate:
    argv: tuple[str, ...]
    service: str
    xclient_addr: str


@dataclass(frozen=True, slots=True)
class Playbook:
    path: str
    mta: str
    version: int
    config_dir: str
    files: Mapping[str, str]
    facts: Mapping[str, tuple[str, ...]]
    policies: Mapping[str, Policy]
    validate: tuple[tuple[str, ...], ...]
    simulate: Simulate | None
    reload: tuple[str, ...]
    check_live: tuple[str, ...]


def _line(node: Any, key: Any = None) -> int | None:
    try:
        if key is not None:
            return int(node.lc.key(key)[0]) + 1
        return int(node.lc.line) + 1
    except (AttributeError, KeyError, TypeError):
        return None


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, message: str, node: Any = None, key: Any = None, name: str | None = None) -> ConfigError:
        return ConfigError(message, path=self.path, line=_line(node, key) if node is not None else None,
                           key=name)

    def mapping(self, node: Any, allowed: set[str], where: str) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise self.fail("must be a mapping", node, name=where)
        for key in node:
            if key not in allowed:
                raise self.fail(f"unknown key (allowed: {', '.join(sorted(allowed))})", node, key,
                                f"{where}.{key}" if where else str(key))
        return dict(node)

    def argv(self, node: Any, parent: Any, key: Any, where: str) -> tuple[str, ...]:
        if not isinstance(node, list) or not node or not all(isinstance(a, str) for a in node):
            raise self.fail("must be a non-empty list of strings (an argument vector)", parent, key, where)
        return tuple(node)


def load_playbook(path: str | Path) -> Playbook:
    """Load and validate one playbook file. ConfigError names the file, line and key."""
    path = str(path)
    r = _Reader(path)
    try:
        with open(path) as fh:
            doc = YAML(typ="rt").load(fh)
    except FileNotFoundError as exc:
        raise ConfigError("playbook file not found", path=path) from exc
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=path,
                          line=mark.line + 1 if mark else None) from exc
    top = r.mapping(doc, TOP_KEYS, "")
    for key in ("mta", "config_dir", "files", "policies", "reload"):
        if key not in top:
            raise r.fail("missing required key", doc, name=key)
    files = top["files"]
    if not isinstance(files, dict) or not all(isinstance(v, str) and v.startswith("/") for v in files.values()):
        raise r.fail("must map names to absolute paths", doc, "files", "files")
    policies: dict[str, Policy] = {}
    for pname, pnode in top["policies"].items():
        pol = r.mapping(pnode, POLICY_KEYS, f"policies.{pname}")
        steps = []
        for i, snode in enumerate(pol.get("transforms") or []):
            where = f"policies.{pname}.transforms[{i}]"
            step = r.mapping(snode, STEP_KEYS, where)
            if step.get("file") not in files:
                raise r.fail(f"file must be one of {', '.join(files)}", snode, "file" if "file" in snode
                             else None, f"{where}.file")
            fn = TRANSFORMS.get(step.get("transform", ""))
            if fn is None:
                raise r.fail(f"unknown transform {step.get('transform')!r} (known: {', '.join(TRANSFORMS)})",
                             snode, "transform" if "transform" in snode else None, f"{where}.transform")
            args = step.get("with") or {}
            if not isinstance(args, dict):
                raise r.fail("must be a mapping of arguments", snode, "with", f"{where}.with")
            steps.append(Step(step["file"], step["transform"], fn, MappingProxyType(dict(args))))
        expect = pol.get("expect_local", "accept")
        if expect not in ("accept", "refuse"):
            raise r.fail("must be accept or refuse", pnode, "expect_local", f"policies.{pname}.expect_local")
        policies[pname] = Policy(pname, str(pol.get("description", "")), expect, tuple(steps))
    facts = top.get("facts") or {}
    simulate = None
    if top.get("simulate"):
        sim = r.mapping(top["simulate"], SIMULATE_KEYS, "simulate")
        simulate = Simulate(r.argv(sim.get("argv"), top["simulate"], "argv", "simulate.argv"),
                            str(sim.get("service", "smtp/inet")), str(sim.get("xclient_addr", "203.0.113.9")))
    return Playbook(
        path=path, mta=str(top["mta"]), version=int(top.get("version", 1)), config_dir=str(top["config_dir"]),
        files=MappingProxyType(dict(files)),
        facts=MappingProxyType({k: r.argv(v, facts, k, f"facts.{k}") for k, v in facts.items()}),
        policies=MappingProxyType(policies),
        validate=tuple(r.argv(v, top["validate"], i, f"validate[{i}]")
                       for i, v in enumerate(top.get("validate") or [])),
        simulate=simulate,
        reload=r.argv(top["reload"], doc, "reload", "reload"),
        check_live=r.argv(top.get("check_live") or ["true"], doc, "check_live", "check_live"),
    )


def playbook_for(mta: str, directory: str | Path | None = None) -> Playbook:
    """The playbook of `mta` from `directory` (default: the project's playbooks/)."""
    base = Path(directory) if directory else PLAYBOOK_DIR
    path = base / f"{mta}.yaml"
    if not path.exists():
        raise ConfigError(f"no playbook for mta {mta!r} (looked for {path}); available: "
                          + ", ".join(sorted(p.stem for p in base.glob("*.yaml"))), key="mta")
    return load_playbook(path)


def resolve_args(args: Mapping[str, Any], host: Any, texts: Mapping[str, str]) -> dict[str, Any]:
    """Fill `{host.X}` and `{file.NAME}` placeholders of a step's arguments."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, str) and value.startswith("{host.") and value.endswith("}"):
            attr = getattr(host, value[6:-1])
            out[key] = list(attr) if isinstance(attr, tuple) else attr
        elif isinstance(value, str) and value.startswith("{file.") and value.endswith("}"):
            out[key] = texts[value[6:-1]]
        else:
            out[key] = value
    return out


def fill(argv: tuple[str, ...], **values: str) -> list[str]:
    """Substitute `{name}` placeholders inside each argument (values are already validated)."""
    out = []
    for arg in argv:
        for name, value in values.items():
            arg = arg.replace("{" + name + "}", value)
        out.append(arg)
    return out
