"""Fixtures for the end-to-end harness parts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.netns import Topology, netns_unavailable

_reason: list[str | None] = []


def _netns_reason() -> str | None:
    if not _reason:
        _reason.append(netns_unavailable())
    return _reason[0]


@pytest.fixture
def topology() -> Iterator[Topology]:
    """Client, node a and node b namespaces on one bridge; removed afterwards."""
    reason = _netns_reason()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    with Topology() as topo:
        yield topo
