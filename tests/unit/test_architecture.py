"""The seams hold: MTA knowledge stays in its driver, no import cycle, functions small enough to read.

These read the package's own source (ast), so a change that leaks Postfix into the core, adds a cycle or
grows a 60-line function fails here, naming the place.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "remediate"
MTA_WORDS = re.compile(r"postconf|postfix|main\.cf|master\.cf|smtpd|mynetworks|mydestination|relay_domains"
                       r"|defer_unauth", re.IGNORECASE)


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def test_no_module_outside_the_drivers_and_the_lab_names_an_mta_parameter_file_or_command():
    leaks = []
    for name, path in _modules().items():
        if name.startswith(("remediate.mta.", "remediate.lab")) or name == "remediate.mta":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if MTA_WORDS.search(line):
                leaks.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not leaks, "MTA knowledge outside remediate/mta/:\n" + "\n".join(leaks)


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `path` imports at run time (TYPE_CHECKING blocks excluded)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name in modules)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.update(m for m in (child.module, *(f"{child.module}.{a.name}" for a in child.names))
                             if m in modules)
            visit(child)

    visit(tree)
    return found


def test_the_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    # a package's __init__ importing its own submodules is how packages expose names, not a cycle
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = walk(name)
            assert cycle is None, " -> ".join(cycle)


def test_every_function_is_under_sixty_lines():
    long = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length >= 60:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "\n".join(long)


OS_COMMANDS = {"cat", "test", "stat", "sh", "mktemp", "install", "sha256sum", "ls", "rm", "cp", "mv", "chown",
               "chmod", "touch", "ss", "sudo", "mkdir"}


def test_only_the_shell_builds_os_commands():
    """Remote OS primitives live in shell.py (transport.py only wraps argv in sudo); drivers run MTA commands."""
    found = []
    for name, path in _modules().items():
        if name in ("remediate.shell", "remediate.transport") or name.startswith("remediate.lab"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.List | ast.Tuple) and node.elts and isinstance(node.elts[0], ast.Constant) \
                    and node.elts[0].value in OS_COMMANDS:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)[:60]}")
    assert not found, "\n".join(found)


def test_the_command_line_loads_no_ssh_smtp_or_driver_stack_until_a_command_runs():
    """`remediate --help` (and a typo) answer at once: the heavy modules are imported by the commands that use
    them (issue #9, lazy imports)."""
    import subprocess
    import sys

    code = ("import sys, remediate.cli; print(' '.join(m for m in ('paramiko', 'structlog', 'ruamel.yaml', "
            "'remediate.probe', 'remediate.orchestrator', 'remediate.mta', 'remediate.backup') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_the_driver_registry_names_each_drivers_own_name_and_listeners_and_loads_one_only_when_asked():
    import subprocess
    import sys

    from remediate.mta import DRIVERS, LISTENERS

    for name, cls in DRIVERS.items():
        assert cls.name == name
        assert {process for process, mta in LISTENERS.items() if mta == name} == set(cls.listeners)
    code = ("import sys; from remediate.mta import driver_for; driver_for('postfix'); "
            "print(' '.join(m for m in sys.modules if m.startswith('remediate.mta.') and m.endswith('.driver')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == ["remediate.mta.postfix.driver"]
