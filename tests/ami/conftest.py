from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from ami.client import AmiClient
from ami.simulator import AsteriskSimulator

REPO_ROOT = Path(__file__).resolve().parents[2]
CAPTURES = REPO_ROOT / "tests" / "fixtures" / "captures"
SECRET = "t0p-s3cret-value"


def captures_dir() -> Path:
    return CAPTURES


@pytest.fixture
async def sim() -> AsyncIterator[AsteriskSimulator]:
    s = AsteriskSimulator(port=0, secret=SECRET, control_port=0, auth_fail_delay=0.2)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., AmiClient]]:
    clients: list[AmiClient] = []

    def make(sim: AsteriskSimulator, **kw: object) -> AmiClient:
        kw.setdefault("ping_interval", 0.2)
        kw.setdefault("ping_timeout", 0.2)
        kw.setdefault("connect_timeout", 1.0)
        secret = str(kw.pop("secret", SECRET))
        c = AmiClient("127.0.0.1", sim.port, "failover", secret, **kw)  # type: ignore[arg-type]
        clients.append(c)
        return c

    try:
        yield make
    finally:
        for c in clients:
            await c.close()
