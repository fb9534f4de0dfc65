"""The system commands the tests use, each declared with its Debian package.

``tests/debian-packages.txt`` is the one list: `make test` installs what it names, and a
test asks for a command only through :func:`missing`, which refuses a command the list
does not declare. So a test cannot pass CI on a machine that had a package by hand.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

PACKAGES_FILE = Path(__file__).resolve().parent.parent / "tests" / "debian-packages.txt"
# Debian puts some commands where a non-root PATH does not look.
SYSTEM_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


class UndeclaredTool(LookupError):
    """A test asked for a command that tests/debian-packages.txt does not declare."""


@functools.cache
def _lines() -> list[tuple[str, list[str]]]:
    out = []
    for raw in PACKAGES_FILE.read_text().splitlines():
        line = raw.split("#", 1)[0].split()
        if line:
            out.append((line[0], line[1:]))
    return out


def declared() -> dict[str, str]:
    """Each declared command and the Debian package that provides it."""
    return {command: package for package, commands in _lines() for command in commands}


def packages() -> list[str]:
    """The declared Debian packages, in the file's order."""
    return [package for package, _ in _lines()]


def package_missing(package: str) -> str | None:
    """Why a declared Debian package (one a test needs for more than a command) is not
    there, or None."""
    if package not in packages():
        raise UndeclaredTool(f"package {package!r} is not declared in {PACKAGES_FILE.name}")
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, timeout=30
    ).stdout
    if "install ok installed" in status:
        return None
    return f"the Debian package {package} is not installed (`make test` installs it)"


def package_of(tool: str) -> str:
    try:
        return declared()[tool]
    except KeyError:
        raise UndeclaredTool(
            f"{tool!r} is used by a test but not declared in {PACKAGES_FILE.name}"
        ) from None


def path(tool: str) -> str | None:
    """Where ``tool`` is installed, or None; the tool must be declared."""
    package_of(tool)
    found = shutil.which(tool)
    if found:
        return found
    for directory in SYSTEM_DIRS:
        candidate = Path(directory) / tool
        if candidate.is_file():
            return str(candidate)
    return None


def missing(*tools: str) -> str | None:
    """Why one of ``tools`` cannot be used (a skip reason), or None when all are there."""
    for tool in tools:
        if path(tool) is None:
            package = package_of(tool)
            return f"{tool} is not installed (Debian package {package}: `make test` installs it)"
    return None


def need(tool: str) -> str:
    """The path of a declared tool that must be there; a clear error when it is not."""
    found = path(tool)
    if found is None:
        raise FileNotFoundError(missing(tool))
    return found
