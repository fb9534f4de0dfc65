"""Every system command a test uses is declared with its Debian package, which `make test`
installs: a test cannot pass only on a machine that had the package by hand."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from harness import tools

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("tests", "harness", "bench", "bot/lab")
# A literal command name passed to one of the ways the tests look a command up.
LOOKUP = re.compile(
    r"""(?:tools\.(?:missing|need|path)|\bneed|shutil\.which)\(\s*((?:"[^"]+"\s*,?\s*)+)\)"""
)
NAME = re.compile(r'"([^"]+)"')
# Not a Debian package: `make asterisk` (in `make test`) builds it from ../shared/vendor.
BUILT_BY_THE_MAKEFILE = {"asterisk"}


def python_files() -> list[Path]:
    this = Path(__file__).resolve()
    return [p for d in SCANNED for p in sorted((REPO / d).rglob("*.py")) if p != this]


def looked_up() -> dict[str, list[str]]:
    """Each command name looked up in the scanned code, with where."""
    found: dict[str, list[str]] = {}
    for path in python_files():
        for match in LOOKUP.finditer(path.read_text()):
            for name in NAME.findall(match.group(1)):
                found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def test_every_command_a_test_looks_up_is_declared() -> None:
    used = looked_up()
    assert {"redis-server", "ip", "keepalived", "chromium", "promtool"} <= set(used)
    undeclared = {
        name: where
        for name, where in used.items()
        if name not in tools.declared() and name not in BUILT_BY_THE_MAKEFILE
    }
    assert not undeclared, f"declare these in {tools.PACKAGES_FILE.name}: {undeclared}"


def test_skips_for_a_missing_command_go_through_the_declared_list() -> None:
    # A hand-written "X is not installed" skip would bypass the list.
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in python_files()
        if path != Path(tools.__file__).resolve()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"not installed|is missing \(apt", line) and "skip" in line
    ]
    assert offenders == []


def test_an_undeclared_command_is_refused() -> None:
    with pytest.raises(tools.UndeclaredTool, match=r"debian-packages\.txt"):
        tools.missing("some-command-no-test-declared")


def test_the_makefile_installs_exactly_the_declared_packages() -> None:
    out = subprocess.run(
        ["make", "-s", "-C", str(REPO), "--no-print-directory", "print-deb-packages"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert out == tools.packages()
    assert "keepalived" in out  # its harness is tested, not only benchmarked
