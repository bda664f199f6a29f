"""Playbooks: a driver's data in YAML (`playbooks/<mta>.yaml`), validated once at load into frozen objects.

A playbook names the files the transforms edit (all under `config_dir`, the validation root: a candidate
is validated in a private copy of that directory, so a file outside it is refused at load), the files
activation regenerates (`derived`), the transforms per policy (by name, from the driver's own registry),
the read-only fact commands, the validation commands, the driver's simulation (`argv` plus options the
driver declares), the `check` and `reload` commands of activation, and `restart`: the bounded waits after
an activation and how to restart an MTA that stops greeting (stop, end it through its pid file, start).
It holds no logic: the driver (`remediate.mta.<name>`) interprets it.
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
from remediate.shell import under

PLAYBOOK_DIR = Path(__file__).resolve().parent.parent.parent / "playbooks"
TOP_KEYS = {"mta", "version", "config_dir", "files", "derived", "facts", "policies", "validate", "simulate",
            "check", "reload", "restart", "backdate_writes"}
RESTART_KEYS = {"answer_timeout", "command_timeout", "settle_timeout", "stop", "stop_timeout", "pidfile", "kill_group",
                "start"}
STEP_KEYS = {"file", "transform", "with"}
POLICY_KEYS = {"description", "expect_local", "transforms"}
Transform = Callable[..., str]


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
    """The driver's simulated outside session: the command that starts it, and options the driver reads."""

    argv: tuple[str, ...]
    options: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Restart:
    """How activation is bounded, and how to restart an MTA that stops greeting (all times in seconds).

    `answer_timeout`: how long the SMTP banner may take after a reload or start; `command_timeout`: how
    long a reload, stop or start command may run before it counts as hung; `stop` then, if the process
    `pidfile` names is still alive `stop_timeout` after it, SIGKILL to it (to its process group with
    `kill_group`), then `start`. No `stop`/`start`: the MTA cannot be restarted by this tool.
    `settle_timeout` (0: off; needs `pidfile`): after the last reload command, how long to wait (in the same
    round trip) for the children the process in `pidfile` had before it to exit, so that what answers next
    runs the new configuration."""

    answer_timeout: float = 20.0
    command_timeout: float = 30.0
    settle_timeout: float = 0.0
    stop: tuple[tuple[str, ...], ...] = ()
    stop_timeout: float = 10.0
    pidfile: str | None = None
    kill_group: bool = False
    start: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Playbook:
    path: str
    mta: str
    version: int
    config_dir: str                                # the validation root; every `files` path lies under it
    files: Mapping[str, str]                       # name -> absolute path, transformed
    derived: tuple[str, ...]                       # absolute paths activation regenerates
    facts: Mapping[str, tuple[str, ...]]           # name -> read-only command
    policies: Mapping[str, Policy]
    validate: tuple[tuple[str, ...], ...]          # run on the live config and on the private copy ({dir})
    simulate: Simulate | None
    check: tuple[tuple[str, ...], ...]             # activation, first: the live config is sound
    reload: tuple[tuple[str, ...], ...]            # activation, then: regenerate and reload
    restart: Restart = Restart()                   # bounded waits after activation; restart when wedged
    backdate_writes: int = 0                       # seconds: written files' mtime that far back (cool-down)

    @property
    def label(self) -> str:
        """`mta@version`, as manifests record it."""
        return f"{self.mta}@{self.version}"


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

    def argvs(self, parent: Any, key: str, prefix: str = "") -> tuple[tuple[str, ...], ...]:
        node = parent.get(key) or []
        if not isinstance(node, list):
            raise self.fail("must be a list of argument vectors", parent, key, prefix + key)
        return tuple(self.argv(v, node, i, f"{prefix}{key}[{i}]") for i, v in enumerate(node))


def load_playbook(path: str | Path, transforms: Mapping[str, Transform],
                  simulate_options: frozenset[str] = frozenset()) -> Playbook:
    """Load and validate one playbook file against its driver's `transforms` registry and the options its
    simulation takes. ConfigError names the file, line and key: unknown keys, a file outside `config_dir`,
    an unknown transform or file in a step, a malformed command."""
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
    config_dir = str(top["config_dir"])
    for name, file in files.items():
        if not under(config_dir, file):
            raise r.fail(f"{file} is outside config_dir {config_dir}: a candidate is validated in a private copy "
                         "of config_dir, so every transformed file must lie under it", files, name, f"files.{name}")
    derived = top.get("derived") or []
    if not isinstance(derived, list) or not all(isinstance(v, str) and v.startswith("/") for v in derived):
        raise r.fail("must be a list of absolute paths", doc, "derived", "derived")
    policies = {name: _policy(r, name, node, files, transforms) for name, node in top["policies"].items()}
    facts = top.get("facts") or {}
    simulate = None
    if top.get("simulate"):
        sim = r.mapping(top["simulate"], {"argv"} | set(simulate_options), "simulate")
        simulate = Simulate(r.argv(sim.get("argv"), top["simulate"], "argv", "simulate.argv"),
                            MappingProxyType({k: str(v) for k, v in sim.items() if k != "argv"}))
    return Playbook(
        path=path, mta=str(top["mta"]), version=int(top.get("version", 1)), config_dir=config_dir,
        files=MappingProxyType(dict(files)), derived=tuple(derived),
        facts=MappingProxyType({k: r.argv(v, facts, k, f"facts.{k}") for k, v in facts.items()}),
        policies=MappingProxyType(policies),
        validate=r.argvs(top, "validate"),
        simulate=simulate,
        check=r.argvs(top, "check"),
        reload=r.argvs(top, "reload"),
        restart=_restart(r, top),
        backdate_writes=_seconds(r, top, "backdate_writes"),
    )


def _seconds(r: _Reader, top: Any, key: str) -> int:
    """An optional whole number of seconds, 0-60 (0 when absent)."""
    value = top.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 60:
        raise r.fail("must be a whole number of seconds from 0 to 60", top, key, key)
    return value


def _restart(r: _Reader, top: Any) -> Restart:
    """The `restart` block (optional): positive times in seconds, argument vectors, an absolute pid file."""
    if top.get("restart") is None:
        return Restart()
    node = top["restart"]
    block = r.mapping(node, RESTART_KEYS, "restart")
    times = {}
    for key in ("answer_timeout", "command_timeout", "stop_timeout"):
        value = block.get(key, getattr(Restart, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
            raise r.fail("must be a number of seconds, more than 0 and at most 3600", node, key, f"restart.{key}")
        times[key] = float(value)
    settle = block.get("settle_timeout", 0)
    if isinstance(settle, bool) or not isinstance(settle, int | float) or not 0 <= settle <= 60:
        raise r.fail("must be a number of seconds from 0 to 60", node, "settle_timeout", "restart.settle_timeout")
    pidfile = block.get("pidfile")
    if pidfile is not None and not (isinstance(pidfile, str) and pidfile.startswith("/")):
        raise r.fail("must be an absolute path", node, "pidfile", "restart.pidfile")
    if settle and pidfile is None:
        raise r.fail("needs restart.pidfile (whose process's children it waits for)", node, "settle_timeout",
                     "restart.settle_timeout")
    if not isinstance(block.get("kill_group", False), bool):
        raise r.fail("must be true or false", node, "kill_group", "restart.kill_group")
    stop, start = r.argvs(node, "stop", "restart."), r.argvs(node, "start", "restart.")
    if bool(stop) != bool(start):
        raise r.fail("stop and start go together (a restart needs both)", node, "stop" if stop else "start",
                     "restart")
    return Restart(stop=stop, start=start, pidfile=pidfile, kill_group=bool(block.get("kill_group", False)),
                   settle_timeout=float(settle), **times)


def _policy(r: _Reader, pname: str, pnode: Any, files: Mapping[str, str],
            transforms: Mapping[str, Transform]) -> Policy:
    """One policy: its steps, each naming a known file and a transform of the driver's registry."""
    pol = r.mapping(pnode, POLICY_KEYS, f"policies.{pname}")
    steps = []
    for i, snode in enumerate(pol.get("transforms") or []):
        where = f"policies.{pname}.transforms[{i}]"
        step = r.mapping(snode, STEP_KEYS, where)
        if step.get("file") not in files:
            raise r.fail(f"file must be one of {', '.join(files)}", snode, "file" if "file" in snode
                         else None, f"{where}.file")
        fn = transforms.get(step.get("transform", ""))
        if fn is None:
            raise r.fail(f"unknown transform {step.get('transform')!r} (known: {', '.join(transforms)})",
                         snode, "transform" if "transform" in snode else None, f"{where}.transform")
        args = step.get("with") or {}
        if not isinstance(args, dict):
            raise r.fail("must be a mapping of arguments", snode, "with", f"{where}.with")
        steps.append(Step(step["file"], step["transform"], fn, MappingProxyType(dict(args))))
    expect = pol.get("expect_local", "accept")
    if expect not in ("accept", "refuse"):
        raise r.fail("must be accept or refuse", pnode, "expect_local", f"policies.{pname}.expect_local")
    return Policy(pname, str(pol.get("description", "")), expect, tuple(steps))


def resolve_args(args: Mapping[str, Any], variables: Mapping[str, Any], texts: Mapping[str, str],
                 facts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Fill `{host.X}` placeholders (from the driver's `variables` for the host, rendered in its MTA's own
    notation), `{file.NAME}` placeholders (the candidate text so far) and `{fact.NAME}` placeholders (what
    the driver read on the host; "" when it could not tell) of a step's arguments."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, str) and value.startswith("{host.") and value.endswith("}"):
            attr = variables[value[6:-1]]
            out[key] = list(attr) if isinstance(attr, tuple) else attr
        elif isinstance(value, str) and value.startswith("{file.") and value.endswith("}"):
            out[key] = texts[value[6:-1]]
        elif isinstance(value, str) and value.startswith("{fact.") and value.endswith("}"):
            out[key] = (facts or {}).get(value[6:-1], "")
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
