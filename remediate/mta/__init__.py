"""The MTA drivers and their registry: which driver works a host, chosen after connecting.

`DRIVERS` maps an inventory `mta` value to its driver class; `driver_for` loads one (its playbook read
and validated once per process); `resolve` picks the driver for a connected host, detecting the MTA
listening on port 25 when the inventory says `mta: auto`. A known MTA without a driver yet (see
`remediate.model.MTAS`) raises `DriverError` with the reason, so the caller can skip the host and keep
the fleet going. How to add an MTA: docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from remediate.errors import DriverError
from remediate.model import Host
from remediate.mta.base import (
    Candidate,
    Derived,
    Driver,
    Facts,
    File,
    Object,
    PlaybookDriver,
    Simulation,
    unchanged,
)
from remediate.shell import Shell

#: inventory `mta` value -> (module, class, the process names its driver's `listeners` gives). A driver's
#: module is imported on first use: a run that works only Postfix hosts never loads Exim's.
_REGISTRY: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "postfix": ("remediate.mta.postfix.driver", "PostfixDriver", ("master",)),
    "exim": ("remediate.mta.exim.driver", "EximDriver", ("exim4", "exim")),
    "sendmail": ("remediate.mta.sendmail.driver", "SendmailDriver", ("sendmail", "sendmail-mta")),
}


class _Drivers(Mapping[str, type[PlaybookDriver]]):
    """The driver classes by inventory `mta` value, each imported when first looked up."""

    def __getitem__(self, mta: str) -> type[PlaybookDriver]:
        module, cls, _ = _REGISTRY[mta]
        found: type[PlaybookDriver] = getattr(importlib.import_module(module), cls)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)


DRIVERS: Mapping[str, type[PlaybookDriver]] = _Drivers()

#: process names seen listening on port 25, for MTAs with or without a driver
LISTENERS: dict[str, str] = {name: mta for mta, (_, _, names) in _REGISTRY.items() for name in names}

__all__ = ["DRIVERS", "Candidate", "Derived", "Driver", "Facts", "File", "Object", "Simulation", "detect",
           "driver_for", "has_driver", "resolve", "unchanged"]


def has_driver(mta: str) -> bool:
    return mta in DRIVERS


@functools.cache
def _load(mta: str, playbook_dir: str | None) -> PlaybookDriver:
    return DRIVERS[mta](playbook_dir)


def driver_for(mta: str, playbook_dir: str | Path | None = None) -> Driver:
    """The driver of `mta` (its playbook loaded once). DriverError when `mta` has no driver yet;
    ConfigError (file, line, key) when its playbook is invalid."""
    if mta not in DRIVERS:
        raise DriverError(f"no driver for {mta} yet (drivers: {', '.join(DRIVERS)}); the host is scanned from "
                          "outside only")
    return _load(mta, str(playbook_dir) if playbook_dir else None)


def detect(shell: Shell, port: int = 25) -> str | None:
    """The MTA serving SMTP on the host: by the process listening on `port`, confirmed by its driver
    where there is one; else the first driver whose configuration is present. None when nothing known."""
    process = shell.listener(port)
    mta = LISTENERS.get(process or "")
    if mta is not None and (mta not in DRIVERS or driver_for(mta).discover(shell)):
        return mta
    for name in DRIVERS:
        if driver_for(name).discover(shell):
            return name
    return None


def resolve(host: Host, shell: Shell, playbook_dir: str | Path | None = None) -> Driver:
    """The driver for a connected host: its inventory `mta`, or the detected one for `auto`.
    DriverError when there is none (the reason says which MTA, or that none was recognised)."""
    mta = host.mta
    if mta == "auto":
        found = detect(shell, port=25)
        if found is None:
            raise DriverError(f"{host.name}: mta auto: no known MTA listens on port 25 and no driver's "
                              "configuration was found")
        mta = found
    try:
        return driver_for(mta, playbook_dir)
    except DriverError as exc:
        raise DriverError(f"{host.name}: {exc}") from exc
