"""Recorders: turn what the simulators logged and what the harness sampled into intervals.

Nothing here asks a bot anything. Inputs are the simulators' JSONL logs, the
fake DRBD's state log, and samplers that look at the machine directly (process
liveness, a Redis key). Every stamp is ``time.monotonic()`` of this machine.

Samplers run in threads, not on the test's event loop, so that a busy loop
cannot stretch their period.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from bot.lab.cluster import pid_alive, read_pidfile
from harness.checker import Interval, RecorderHealth, merge

Record = dict[str, Any]

DEFAULT_HOSTS: Mapping[str, str] = {"A": "a", "B": "b"}


def read_jsonl(path: str | Path) -> list[Record]:
    """Read a JSONL log; a missing file is empty, a torn last line (writer killed) is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    out: list[Record] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ValueError(f"{p}:{number}: not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{p}:{number}: not a JSON object")
        out.append(record)
    return out


def _mono(record: Record, where: str) -> float:
    value = record.get("mono")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{where}: record without a numeric 'mono' stamp: {record!r}")
    return float(value)


class IntervalBuilder:
    """Open and close per-node intervals from a stream of observations in time order."""

    def __init__(self) -> None:
        self._open: dict[str, float] = {}
        self._closed: list[Interval] = []
        self._lock = threading.Lock()

    def open(self, node: str, t: float) -> None:
        with self._lock:
            self._open.setdefault(node, t)

    def close(self, node: str, t: float) -> None:
        with self._lock:
            start = self._open.pop(node, None)
            if start is not None:
                self._closed.append(Interval(start, max(t, start), node))

    def set_holders(self, holders: Iterable[str], t: float) -> None:
        """Exactly ``holders`` hold at ``t``: open the new ones, close the others."""
        now = set(holders)
        with self._lock:
            for node in list(self._open):
                if node not in now:
                    self._closed.append(Interval(self._open.pop(node), t, node))
            for node in now:
                self._open.setdefault(node, t)

    def holders(self) -> set[str]:
        with self._lock:
            return set(self._open)

    def intervals(self, end: float = math.inf) -> list[Interval]:
        """Closed intervals plus the open ones ending at ``end``."""
        with self._lock:
            out = list(self._closed)
            out += [Interval(s, max(end, s), n) for n, s in self._open.items()]
        return merge(out)


def rseries_routes(
    source: str | Path | list[Record],
    *,
    hosts: Mapping[str, str] = DEFAULT_HOSTS,
    end: float = math.inf,
) -> list[Interval]:
    """Where the spans were routed, from the R-Series simulator's log.

    Any record with an ``active`` field states the active host from its ``mono``
    on (``"A"``/``"B"``; anything else, e.g. ``null``, means no host).
    """
    records = source if isinstance(source, list) else read_jsonl(source)
    where = str(source) if not isinstance(source, list) else "rseries log"
    builder = IntervalBuilder()
    for record in records:
        if "active" not in record:
            continue
        active = record["active"]
        node = hosts.get(active) if isinstance(active, str) else None
        builder.set_holders([node] if node else [], _mono(record, where))
    return builder.intervals(end)


def drbd_primaries(source: str | Path | list[Record], *, end: float = math.inf) -> list[Interval]:
    """When each node was DRBD Primary, from the fake drbdadm's state log."""
    records = source if isinstance(source, list) else read_jsonl(source)
    where = str(source) if not isinstance(source, list) else "drbd log"
    builder = IntervalBuilder()
    for record in records:
        node, role = record.get("node"), record.get("role")
        if not isinstance(node, str) or not isinstance(role, str):
            raise ValueError(f"{where}: record without 'node' and 'role': {record!r}")
        t = _mono(record, where)
        if role.lower() == "primary":
            builder.open(node, t)
        else:
            builder.close(node, t)
    return builder.intervals(end)


@dataclass
class AsteriskHistory:
    running: list[Interval] = field(default_factory=list)
    booted: list[Interval] = field(default_factory=list)


def asterisk_lifetimes(
    source: str | Path | list[Record],
    node: str,
    *,
    deaths: Mapping[int, float] | None = None,
    end: float = math.inf,
) -> AsteriskHistory:
    """One node's AMI simulator lifetimes: running (start..exit) and fully booted.

    A SIGKILLed simulator logs no ``exit``: its intervals close at the death time
    a ``PidSampler`` saw for its pid (``deaths``), or stay open until ``end``.
    """
    records = source if isinstance(source, list) else read_jsonl(source)
    where = str(source) if not isinstance(source, list) else f"asterisk log of {node}"
    deaths = deaths or {}
    running: list[Interval] = []
    booted: list[Interval] = []
    # Keyed by pid: a new simulator may start before the old one's exit is logged.
    started: dict[Any, float] = {}
    booted_at: dict[Any, float] = {}
    for record in records:
        event, pid, t = record.get("event"), record.get("pid"), _mono(record, where)
        if event == "start":
            started.setdefault(pid, t)
        elif event == "fully_booted":
            started.setdefault(pid, t)
            booted_at.setdefault(pid, t)
        elif event == "shutdown":
            if pid in booted_at:
                booted.append(Interval(booted_at.pop(pid), t, node))
        elif event == "exit":
            if pid in booted_at:
                booted.append(Interval(booted_at.pop(pid), t, node))
            if pid in started:
                running.append(Interval(started.pop(pid), t, node))
    for pid, start in started.items():
        stop = deaths.get(pid, end) if isinstance(pid, int) else end
        running.append(Interval(start, max(stop, start), node))
    for pid, start in booted_at.items():
        stop = deaths.get(pid, end) if isinstance(pid, int) else end
        booted.append(Interval(start, max(stop, start), node))
    return AsteriskHistory(merge(running), merge(booted))


class PollingSampler:
    """Call ``probe()`` every ``period`` seconds in a thread; record who held what when.

    A holder's interval starts at the first sample that saw it and ends at the
    first sample that did not, so the error is at most one period (plus the
    probe's own duration): pass that as the checker's ``sample_tolerance``.
    """

    def __init__(
        self, probe: Callable[[], Iterable[str]], period: float = 0.01, name: str = "sampler"
    ):
        self.probe = probe
        self.period = period
        self.name = name
        self.builder = IntervalBuilder()
        self.samples = 0
        self.errors: list[str] = []
        self.max_gap = 0.0  # longest time between two samples: the real resolution
        self.last_sample: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first = threading.Event()

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._first.wait(5.0):
            self.stop()
            raise RuntimeError(f"{self.name}: no first sample within 5 s")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        last: float | None = None
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                holders = set(self.probe())
            except Exception as exc:  # a failed probe is recorded, never fatal
                if len(self.errors) < 100:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                holders = None
            t = time.monotonic()
            if holders is not None:
                self.builder.set_holders(holders, t)
                self.on_sample(holders, t)
            if last is not None:
                self.max_gap = max(self.max_gap, t - last)
            last = t
            self.last_sample = t
            self.samples += 1
            self._first.set()
            next_at = max(next_at + self.period, t)
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def on_sample(self, holders: set[str], t: float) -> None:
        """Hook for subclasses; called from the sampler thread."""

    def gap(self, end: float | None = None) -> float:
        """The longest time without a sample up to ``end`` (now): a sampler that stopped
        sampling, or never started, has a gap that grows until the verdict."""
        end = time.monotonic() if end is None else end
        if self.last_sample is None:
            return math.inf
        return max(self.max_gap, end - self.last_sample)

    def health(self, tolerance: float, end: float | None = None) -> RecorderHealth:
        """What the verdict needs to know about this sampler (harness.checker)."""
        return RecorderHealth(self.name, self.samples, tuple(self.errors), self.gap(end), tolerance)

    def holders(self) -> set[str]:
        return self.builder.holders()

    def intervals(self, end: float | None = None) -> list[Interval]:
        return self.builder.intervals(time.monotonic() if end is None else end)


class PidSampler(PollingSampler):
    """Which nodes' pidfiles name a live process; remembers when each pid was last seen alive
    and when it was first found dead."""

    def __init__(self, pidfiles: Mapping[str, str | Path], period: float = 0.01):
        self.pidfiles = {node: Path(p) for node, p in pidfiles.items()}
        self.deaths: dict[int, float] = {}
        self._watched: dict[int, str] = {}
        self._dead: list[int] = []
        self._lock = threading.Lock()
        super().__init__(self._probe, period, name="pid-sampler")

    def watch(self, node: str, pid: int) -> None:
        """Also follow ``pid`` (e.g. read from a log) even after its pidfile is gone."""
        with self._lock:
            self._watched.setdefault(pid, node)

    def _probe(self) -> set[str]:
        holders = set()
        for node, path in self.pidfiles.items():
            pid = read_pidfile(path)
            if pid is not None:
                with self._lock:
                    self._watched.setdefault(pid, node)
        with self._lock:
            watched = dict(self._watched)
        for pid, node in watched.items():
            if pid in self.deaths or pid in self._dead:
                continue
            if pid_alive(pid):
                holders.add(node)
            else:
                self._dead.append(pid)
        return holders

    def on_sample(self, holders: set[str], t: float) -> None:
        # Stamp deaths with the sample's time, the same stamp that closes the interval.
        with self._lock:
            for pid in self._dead:
                self.deaths[pid] = t
            self._dead.clear()


class RedisKeySampler(PollingSampler):
    """Who a Redis key names, sampled: e.g. the lease holder, with a parser for its value.

    ``parse`` turns the raw value (``None`` when the key is missing) into a node
    id or ``None``. An unreachable Redis (the fault under test, not the witness's)
    is counted in ``unreachable`` and keeps the last holders (the lease does not
    vanish because the witness is down); any other failure is a probe error.
    """

    def __init__(
        self,
        url: str,
        key: str,
        parse: Callable[[bytes | None], str | None],
        period: float = 0.01,
    ):
        import redis  # the sync client: this runs in a thread

        self._client = redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
        self.key = key
        self.parse = parse
        self.unreachable = 0  # samples that found Redis unreachable (holders kept)
        self.last_error = ""
        super().__init__(self._probe, period, name="redis-key-sampler")

    def _probe(self) -> set[str]:
        import redis

        try:
            value = self._client.get(self.key)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self.unreachable += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return self.builder.holders()
        node = self.parse(value.encode() if isinstance(value, str) else value)
        return {node} if node else set()

    def stop(self) -> None:
        super().stop()
        self._client.close()


class AmiBootRecorder:
    """A real Asterisk's FullyBooted and Shutdown, seen over AMI from outside the bots.

    Writes the records the simulator writes for itself (``fully_booted``,
    ``shutdown``) with the pid from the Asterisk's pidfile, so that
    ``asterisk_lifetimes`` reads both kinds alike. It logs in again after every
    restart; a FullyBooted is stamped when it arrives (a few ms late at most).
    """

    def __init__(self, port: int, username: str, secret: str, pidfile: Path, record: Path):
        self.port = port
        self.username = username
        self.secret = secret
        self.pidfile = pidfile
        self.record = record
        self.seen: list[Record] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ami-boot-recorder", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _write(self, event: str) -> None:
        line = {"t": time.time(), "mono": time.monotonic(), "event": event}
        line["pid"] = read_pidfile(self.pidfile)
        self.seen.append(line)
        with self.record.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self._session()
            self._stop.wait(0.02)

    def _session(self) -> None:
        import socket

        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.settimeout(0.2)
            login = (
                f"Action: Login\r\nUsername: {self.username}\r\nSecret: {self.secret}\r\n"
                "Events: system\r\n\r\n"
            )
            sock.sendall(login.encode())
            buf = b""
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buf += chunk
                *frames, buf = buf.split(b"\r\n\r\n")
                for frame in frames:
                    if b"Event: FullyBooted" in frame:
                        self._write("fully_booted")
                    elif b"Event: Shutdown" in frame:
                        self._write("shutdown")
