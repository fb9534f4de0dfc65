"""The report `make test` writes after pytest: durations to a file, and CI's floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import report

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.a" name="test_fast" time="0.5"/>
<testcase classname="tests.a" name="test_slow" time="12.25"/>
<testcase classname="tests.b" name="test_broken" time="1.0"><failure message="x"/></testcase>
<testcase classname="tests.b" name="test_skipped" time="0.0"><skipped message="y"/></testcase>
</testsuite></testsuites>
"""


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    (tmp_path / "junit.xml").write_text(JUNIT)
    return tmp_path


def test_every_duration_is_written_slowest_first(
    reports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert report.report(reports) == 0
    lines = (reports / "durations.txt").read_text().splitlines()
    assert len(lines) == 4
    assert "tests.a::test_slow" in lines[0] and "12.25 s" in lines[0]
    assert "failed" in lines[1] and "tests.b::test_broken" in lines[1]


def test_ci_fails_a_run_of_fewer_tests_than_the_floor(
    reports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    assert report.floor() > 3
    assert report.report(reports) == 1  # three ran (one skipped): far under the floor
    monkeypatch.setattr(report, "floor", lambda: 3)
    assert report.report(reports) == 0


def test_no_report_is_a_failure(tmp_path: Path) -> None:
    assert report.report(tmp_path) == 1
