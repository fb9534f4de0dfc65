from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.lab.cluster import PORT_BAND_ENV, port_bands
from bot.lab.netns import Topology, netns_unavailable
from tests.helpers import RedisServer

# In CI every part the Makefile installs is present, so a skip means a layer went untested:
# with CI=true a skip becomes a failure that names what was missing. Reasons listed here are
# skips that are not about a missing part and stay skips in CI (none today).
SKIP_ALLOWED_IN_CI: tuple[str, ...] = ()


# `make test-loaded`: this many spinning processes run beside the tests, started by the
# run itself (the controller, not each worker) and ended with it.
LOAD_ENV = "FAILOVER_TEST_LOAD"
_burner: list[subprocess.Popen[bytes]] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    count = os.environ.get(LOAD_ENV, "0")
    if os.environ.get("PYTEST_XDIST_WORKER") or not count.isdigit() or int(count) == 0:
        return
    _burner.append(subprocess.Popen([sys.executable, "-m", "harness.burner", count]))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for proc in _burner:
        proc.terminate()
        proc.wait(10)
    _burner.clear()


def pytest_configure(config: pytest.Config) -> None:
    # Parallel workers (pytest-xdist) each take lab ports from a band of their own.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and count.isdigit():
        os.environ[PORT_BAND_ENV] = port_bands(int(count))[int(worker[2:])]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _skip_reason(longrepr: Any) -> str:
    # A skip's longrepr is (path, lineno, "Skipped: reason").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report.longrepr)
    if any(allowed in reason for allowed in SKIP_ALLOWED_IN_CI):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, which needs every part present: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    _fail_skip_in_ci(report)
    if report.failed:
        _attach_cluster_logs(item, report)


def _attach_cluster_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    # A failed end-to-end wait says only what it waited for; the bots' own logs say why.
    for value in getattr(item, "funcargs", {}).values():
        logs_tail = getattr(value, "logs_tail", None)
        if callable(logs_tail):
            report.sections.append(("cluster logs (last lines of each bot)", logs_tail()))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


_netns_reason: list[str | None] = []


@pytest.fixture
def topology() -> Iterator[Topology]:
    """The lab's namespaces: client, node a and node b on one bridge; removed afterwards."""
    if not _netns_reason:
        _netns_reason.append(netns_unavailable())
    if _netns_reason[0]:
        pytest.skip(f"network namespaces unavailable: {_netns_reason[0]}")
    with Topology() as topo:
        yield topo
