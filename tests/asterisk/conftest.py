"""A real Asterisk for the tests: found or built by ``make asterisk``.

Outside CI a missing Asterisk skips these tests with one line saying how to get
one; with ``CI=true`` they fail instead, so CI never passes without them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from ami.client import AmiClient
from bot.lab.asterisk import Runtime
from tests.helpers import free_port, port_open, require_asterisk, wait_for_sync

SECRET = "real-ami-s3cret"


@pytest.fixture(scope="session")
def asterisk_binary() -> str:
    return require_asterisk()


MakeAsterisk = Callable[..., Runtime]


@pytest.fixture
def make_asterisk(asterisk_binary: str, tmp_path: Path) -> Iterator[MakeAsterisk]:
    """Start Asterisks with their own directories and ports; all killed afterwards."""
    started: list[Runtime] = []

    def make(name: str = "pbx", *, start: bool = True, **kw: object) -> Runtime:
        rt = Runtime(
            tmp_path / name,
            asterisk_binary,
            free_port(),
            free_port(),
            entityid=f"02:00:00:00:00:{len(started) + 1:02x}",
            ami_secret=SECRET,
            **kw,  # type: ignore[arg-type]
        )
        rt.write()
        started.append(rt)
        if start:
            assert rt.start() == 0, _tail(rt.log)
            wait_for_sync(lambda: port_open(rt.ami_port), 15, "the AMI port")
        return rt

    try:
        yield make
    finally:
        for rt in started:
            rt.kill()


@pytest.fixture
def asterisk(make_asterisk: MakeAsterisk) -> Runtime:
    return make_asterisk()


@pytest.fixture
async def ami_client() -> AsyncIterator[Callable[..., AmiClient]]:
    clients: list[AmiClient] = []

    def make(rt: Runtime, **kw: object) -> AmiClient:
        kw.setdefault("ping_interval", 0.5)
        kw.setdefault("ping_timeout", 0.5)
        kw.setdefault("connect_timeout", 3.0)
        kw.setdefault("action_timeout", 5.0)
        secret = str(kw.pop("secret", rt.ami_secret))
        user = str(kw.pop("username", rt.ami_user))
        c = AmiClient("127.0.0.1", rt.ami_port, user, secret, **kw)  # type: ignore[arg-type]
        clients.append(c)
        return c

    try:
        yield make
    finally:
        for c in clients:
            await c.close()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"
