"""Fixtures for the deployment checks: a scrape target and a real Prometheus."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.metrics import Metrics
from harness import tools
from tests.helpers import free_port, port_open, wait_for_sync

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_JOB = "failover-bot"


@dataclass(frozen=True)
class ScrapeTarget:
    """Something Prometheus can scrape like a running bot."""

    address: str  # host:port
    metrics_path: str
    node: str
    cluster: str
    # The other bots of the same cluster, node id -> host:port, scraped alongside.
    peers: tuple[tuple[str, str], ...] = ()

    @property
    def addresses(self) -> list[str]:
        return [self.address, *(address for _node, address in self.peers)]


def touch_every_family(metrics: Metrics) -> None:
    """Give every family a value, as a bot that has seen some life would."""
    metrics.set_role("primary")
    metrics.set_lease(held=True, epoch=7, remaining=2.4)
    metrics.failovers.labels(reason="health").inc()
    metrics.takeovers.labels(outcome="succeeded").inc()
    metrics.takeover_duration.observe(4.2)
    for step in ("route", "drbd", "vip", "asterisk_start", "fully_booted", "test_call"):
        metrics.observe_step(step, 0.4)
    metrics.self_fences.labels(reason="lease_expired").inc()
    metrics.healthy.set(1)
    metrics.ready.set(1)
    metrics.ami_up.set(1)
    metrics.observe_ami_ping(0.003)
    metrics.ami_reconnects.inc()
    metrics.fully_booted.set(1)
    metrics.active_channels.set(4)
    metrics.set_span_alarms({1: None, 2: "yellow"})
    metrics.test_calls.labels(result="answered").inc()
    metrics.test_call_setup.observe(0.35)
    metrics.redis_up.set(1)
    metrics.redis_rtt.set(0.0004)
    metrics.peer_up.set(1)
    metrics.rseries_up.set(1)
    metrics.set_rseries_active("A")
    metrics.rseries_disagreement.set(0)
    metrics.set_drbd("r0", role="primary", disk_state="UpToDate")
    metrics.vip_present.set(1)
    metrics.webhooks.labels(result="sent").inc()
    metrics.paused.set(0)
    metrics.config_drift.set(0)


class _MetricsServer:
    """An aiohttp server for one Metrics registry, on its own loop in a thread."""

    def __init__(self, metrics: Metrics, port: int) -> None:
        self.metrics = metrics
        self.port = port
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="metrics-target", daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.exposition()
        # aiohttp wants the charset apart from the media type.
        media, _, _params = content_type.partition(";")
        return web.Response(body=body, content_type=media.strip(), charset="utf-8")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the fixture
            self._error = exc
            self._ready.set()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"metrics target did not start: {self._error!r}")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def metrics_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapeTarget]:
    """The scrape targets: a real running pair (`failover-bot run`, a lab cluster).

    Redis, the R-Series simulator and two bots with simulated Asterisks (no network
    namespaces needed: the floating IP is left out); node a is the primary, both nodes'
    APIs serve /metrics.
    """
    if reason := tools.missing("redis-server"):
        pytest.skip(reason)
    from harness.cluster import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("lab"), None)
    try:
        cluster.start()
        cluster.wait_primary(within=60)
        node = cluster.nodes["a"]
        peer = f"127.0.0.1:{cluster.nodes['b'].api_port}"
        yield ScrapeTarget(
            f"127.0.0.1:{node.api_port}", "/metrics", node="a", cluster="lab", peers=(("b", peer),)
        )
    finally:
        cluster.stop()


class Prometheus:
    """A real Prometheus on a loopback port, with its own storage."""

    def __init__(self, workdir: Path, target: ScrapeTarget) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.target = target
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = tools.need("prometheus")
        shutil.copy(ALERTS, self.workdir / "alerts.yml")
        # JSON is YAML: no YAML library needed to write the configuration.
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {
                    "job_name": SCRAPE_JOB,
                    "metrics_path": self.target.metrics_path,
                    "static_configs": [{"targets": self.target.addresses}],
                }
            ],
        }
        (self.workdir / "prometheus.yml").write_text(json.dumps(config, indent=2))
        self.log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                exe,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_sync(self._ready, 20, "prometheus to be ready")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log_text()}")
        if not port_open(self.port):
            return False
        # It listens before it is ready, and answers 503 until then.
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def log_text(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        self.log.close()

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()  # 400/422 carry the PromQL error as JSON
        try:
            return json.loads(raw)
        except ValueError:
            raise AssertionError(f"prometheus answered {path} with {raw[:200]!r}") from None

    def query(self, expr: str) -> dict[str, Any]:
        """The /api/v1/query answer (status, data or errorType/error)."""
        result: dict[str, Any] = self.api("query", query=expr)
        return result


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, metrics_target: ScrapeTarget
) -> Iterator[Prometheus]:
    if reason := tools.missing("prometheus"):
        pytest.skip(reason)
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), metrics_target)
    prom.start()
    try:

        def scraped() -> bool:
            # Two samples of every target: rate() and increase() need two points.
            answer = prom.query(f'count_over_time(up{{job="{SCRAPE_JOB}"}}[1m]) >= 2')
            up = answer["data"]["result"] if answer.get("status") == "success" else []
            return len(up) == len(metrics_target.addresses)

        wait_for_sync(scraped, 20, "two scrapes of every bot")
        yield prom
    finally:
        prom.stop()
