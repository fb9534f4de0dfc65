"""After each `make test`: every test's duration to a file, the slowest on screen, and the
collected-tests floor that CI holds the run to.

    python -m tests.report REPORTS_DIR [FLOOR]    # reads REPORTS_DIR/junit*.xml

FLOOR (default: tests/collected-floor.txt) is for a run that selects a part on purpose,
as `make test-loaded` does.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

FLOOR_FILE = Path(__file__).resolve().parent / "collected-floor.txt"
SHOWN = 15


@dataclass(frozen=True)
class Case:
    name: str
    seconds: float
    outcome: str  # passed, failed, error or skipped


def read_cases(junit: Path) -> list[Case]:
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        cases.append(Case(name, float(case.get("time") or 0.0), outcome))
    return cases


def floor() -> int:
    return int(FLOOR_FILE.read_text().split()[0])


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def report(reports: Path, least: int | None = None) -> int:
    junits = sorted(reports.glob("junit*.xml"))
    if not junits:
        print(f"tests.report: no junit*.xml in {reports}: pytest wrote no report", file=sys.stderr)
        return 1
    cases = [case for junit in junits for case in read_cases(junit)]
    by_time = sorted(cases, key=lambda c: c.seconds, reverse=True)
    lines = [f"{c.seconds:9.2f} s  {c.outcome:7}  {c.name}" for c in by_time]
    (reports / "durations.txt").write_text("\n".join(lines) + "\n")
    total = sum(c.seconds for c in cases)
    print(
        f"\nslowest {SHOWN} of {len(cases)} tests ({total:.0f} s of test time in all; "
        f"every duration in {reports / 'durations.txt'}):"
    )
    print("\n".join(lines[:SHOWN]))
    ran = sum(1 for c in cases if c.outcome != "skipped")
    least = floor() if least is None else least
    if in_ci() and ran < least:
        print(
            f"tests.report: {ran} tests ran, fewer than the floor of {least} "
            f"({FLOOR_FILE.name}): a selection left in PYTEST_ARGS?",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(report(Path(args[0] if args else ".reports"), int(args[1]) if len(args) > 1 else None))
