from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.fakes import FakeWorld, drbd_resource


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWorld]:
    """Fake DRBD, mount, ip, arping and service commands first on PATH, with fresh state."""
    fake = FakeWorld(tmp_path / "fake")
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    fake.set_drbd({"r0": drbd_resource(device="/dev/drbd0")})
    yield fake
