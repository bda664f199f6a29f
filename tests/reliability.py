"""A pytest plugin that turns the fault tests into `docs/RELIABILITY.md`: one row per fault or hostile input.

A test takes the `reliability` fixture and calls it once with what it proved: the fault, what the tool
reported, the host's end state (checked from outside), the seconds it took and the bytes of configuration
lost. The row counts only if the test passes; a test that fails marks its row `FAILED` (the table never
claims an outcome that no longer holds). With `pytest --reliability-doc`, the rows of this run are merged
into `docs/reliability.json` (rows by test, so a run of some files updates only their rows) and
`docs/RELIABILITY.md` is written from it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "docs" / "reliability.json"
DOC = ROOT / "docs" / "RELIABILITY.md"
_PENDING = pytest.StashKey[dict[str, "Row"]]()
_ROWS: dict[str, dict[str, object]] = {}


@dataclass(frozen=True, slots=True)
class Row:
    area: str          # fault | hostile input | security
    case: str          # the fault, as the issue names it
    outcome: str       # what the tool reported
    end_state: str     # the host (or the input's effect), checked from outside
    seconds: float | None
    bytes_lost: int
    test: str = ""


class Recorder:
    """`reliability(area, case, outcome, end_state, seconds, bytes_lost=0)` records one row for this test."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item

    def __call__(self, area: str, case: str, outcome: str, end_state: str, seconds: float | None = None,
                 bytes_lost: int = 0) -> None:
        """`seconds` None: the whole test's duration (set up and checks included), marked with `~`. A second
        call for the same `case` (a property test's next example) replaces the first."""
        self.item.stash.setdefault(_PENDING, {})[case] = Row(
            area, case, outcome, end_state, None if seconds is None else round(seconds, 1), bytes_lost,
            self.item.nodeid)


class Stopwatch:
    """`with Stopwatch() as watch: ...; watch.seconds`."""

    def __enter__(self) -> Stopwatch:
        self.start, self.seconds = time.monotonic(), 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.start


def lost_bytes(original: dict[Path, bytes], *copies: Path) -> int:
    """Bytes of the `original` files ({live path: content}) that exist nowhere any more: neither live nor in
    any file under the `copies` directories (backups). 0 means nothing was lost."""
    kept = {hashlib.sha256(p.read_bytes()).hexdigest()
            for root in copies if root.exists() for p in root.rglob("*") if p.is_file()}
    lost = 0
    for path, data in original.items():
        digest = hashlib.sha256(data).hexdigest()
        live = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if live != digest and digest not in kept:
            lost += len(data)
    return lost


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Recorder:
    return Recorder(request.node)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reliability-doc", action="store_true",
                     help="write docs/RELIABILITY.md from the fault tests that ran")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call" or (report.when == "setup" and report.failed):
        if report.passed:
            for i, row in enumerate(item.stash.get(_PENDING, {}).values()):
                entry = asdict(row)
                if row.seconds is None:
                    entry["seconds"] = f"~{report.duration:.0f}"
                _ROWS[f"{item.nodeid}#{i}"] = entry
        else:   # the row of an earlier run no longer holds
            for key, entry in _stored().items():
                if key.startswith(item.nodeid + "#"):
                    outcome = str(entry["outcome"]).removeprefix(FAILED)
                    _ROWS[key] = {**entry, "outcome": FAILED + outcome}
    return report


FAILED = "FAILED in the last run; before: "


def _stored() -> dict[str, dict[str, object]]:
    try:
        return dict(json.loads(STORE.read_text()))
    except (OSError, ValueError):
        return {}


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not session.config.getoption("--reliability-doc") or not _ROWS:
        return
    rows = {**_stored(), **_ROWS}
    STORE.write_text(json.dumps(dict(sorted(rows.items())), indent=1) + "\n")
    DOC.write_text(render(rows))


def render(rows: dict[str, dict[str, object]]) -> str:
    """The Markdown page: one table per area, rows in test order."""
    out = ["# Reliability: faults and hostile input, as the tests left them", "",
           "Generated by the test run (`python3 -m pytest --reliability-doc ...`, plugin `tests/reliability.py`) "
           "from `docs/reliability.json`; each row is one passing test (a failing one says FAILED). End states "
           "are checked from outside the tool: files through the host's own root, SMTP with a real client. "
           "Seconds: what the command took on the 2-core lab machine (`~`: the whole test, checks included). "
           "Bytes lost: bytes of the original "
           "configuration that exist neither on the host nor in any backup copy.",
           f"Last written {time.strftime('%Y-%m-%d', time.gmtime())}.", ""]
    for area in sorted({str(r["area"]) for r in rows.values()}):
        out += [f"## {area}", "", "| case | outcome | end state | seconds | bytes lost | test |",
                "|---|---|---|---|---|---|"]
        for row in (r for r in rows.values() if r["area"] == area):
            test = str(row["test"]).replace("tests/", "", 1)
            cells = [row["case"], row["outcome"], row["end_state"], row["seconds"], row["bytes_lost"], f"`{test}`"]
            out.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        out.append("")
    return "\n".join(out)
