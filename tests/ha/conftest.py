from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from harness.fakes import FakeWorld

# Default: fast enough for every run of the suite. `--hypothesis-profile=thorough`
# (make bench, manual runs) explores many more schedules.
settings.register_profile(
    "default",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    """The fake DRBD, mount, ip and service commands first on PATH, with fresh state."""
    w = FakeWorld(tmp_path / "fakes")
    for key, value in w.env().items():
        monkeypatch.setenv(key, value)
    return w
